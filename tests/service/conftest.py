"""Fixtures of the server tests: one real camserve server on a loopback port per module, and a stub to it."""
from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from camserve.v1 import explain_pb2_grpc
from serving import serving


@pytest.fixture(scope="module")
def server():
    with serving() as (process, port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield process, channel
        channel.close()


@pytest.fixture(scope="module")
def stub(server):
    return explain_pb2_grpc.ExplainServiceStub(server[1])


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, both signed by the CA."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(name, key, issuer, issuer_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem, key, cert):
        (folder / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camserve test CA")])
    ca = issue("camserve test CA", ca_key, ca_name, ca_key,
               [(x509.BasicConstraints(ca=True, path_length=None), True),
                (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                               key_encipherment=False, data_encipherment=False, key_agreement=False,
                               encipher_only=False, decipher_only=False), True)])
    write("ca", ca_key, ca)
    for stem, usage, san in (("server", ExtendedKeyUsageOID.SERVER_AUTH,
                              [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("client")])):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, key, issue(stem, key, ca.subject, ca_key,
                               [(x509.BasicConstraints(ca=False, path_length=None), True),
                                (x509.ExtendedKeyUsage([usage]), False), (x509.SubjectAlternativeName(san), False)]))
    return folder
