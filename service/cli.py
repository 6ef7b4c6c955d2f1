"""The `camserve` command line: inspect and rewrite ONNX graphs, explain an image with any method."""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np
import onnx

from camserve import __version__
from camserve import graph_tools as gt

from .errors import BadRequest
from .methods import DEFAULT

# the bundled repository: package data (camserve/bundled) in an installed wheel, models/ in a checkout
_PACKAGE = Path(__file__).resolve().parent.parent
BUNDLED = _PACKAGE / "bundled" if (_PACKAGE / "bundled").is_dir() else _PACKAGE / "models"
DEFAULT_MODEL = BUNDLED / "mobilenet_v2"


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def cmd_inspect(args) -> None:
    from ..graph_tools.model_info import PROBE_SIZE
    from .model import Model
    model = Model(args.model)
    info = model.info    # with config.json's declarations (kind, output, head)
    print(f"input   {info.input_name} {list(info.input_shape)} {info.layout}")
    if model.precision != "float32":
        print(f"precision  {model.precision} (explained through a float32 copy of the graph)")
    note = " (the graph's Softmax output is skipped)" if info.softmax_removed else ""
    print(f"kind    {info.kind}" + (f" (head {info.head})" if info.head else ""))
    name = "logits " if info.kind == "classifier" else "output "
    print(f"{name} {info.logits} {list(info.output_shape)} classes={info.num_classes}{note}")
    probe = "" if all(isinstance(d, int) for d in info.spatial) else f" at {PROBE_SIZE}x{PROBE_SIZE}"
    for stride, anchors, layer in info.scales:
        print(f"scale   stride {stride}: {anchors} anchors{probe}, branch layer {layer}")
    print(f"default layer  {info.default_layer}")
    for title, layers in ((f"{len(info.layers)} candidate layers:", info.layers),
                          (f"{len(info.channels_last)} channels-last layers (N, h, w, C; gradient methods only):",
                           info.channels_last)):
        if layers:
            print(title)
            width = max(len(layer.name) for layer in layers)
            for layer in layers:
                print(f"  {layer.name:<{width}}  {str(list(layer.shape)):<22} {layer.op}")


def cmd_rewrite(args) -> None:
    model = gt.make_batch_dynamic(gt.load(args.model))
    layers = args.layers or [gt.inspect(model).default_layer]
    if args.kind == "gradients":
        model = gt.add_gradients(model, layers, input_gradient=args.input_gradient)
    else:
        model = gt.expose(model, layers)
    onnx.save(model, args.output)
    print(f"wrote {args.output}: inputs {[i.name for i in gt.graph.real_inputs(model.graph)]}, "
          f"outputs {[o.name for o in model.graph.output]}")


def parse_target(text: str):
    """--target: CLASS (a class id), box:X0,Y0,X1,Y1[:CLASS], region:CLASS or detection:K (the K-th detection,
    best first); boxes in the model input's pixels. Class ids stay ints, detection indices ("detection", K)."""
    from .targets import Box, Region

    kind, colon, rest = text.partition(":")
    try:
        if not colon:
            return int(text)
        if kind == "region":
            return Region(int(rest))
        if kind == "detection":
            return ("detection", int(rest))
        if kind == "box":
            corners, _, class_id = rest.partition(":")
            box = tuple(float(v) for v in corners.split(","))
            if len(box) != 4:
                raise ValueError
            return Box(box, int(class_id) if class_id else None)
    except ValueError:
        pass
    raise BadRequest(f"--target {text!r}: give CLASS, box:X0,Y0,X1,Y1[:CLASS], region:CLASS or detection:K",
                     "target")


def _local_targets(args, explainer, x: np.ndarray):
    """The --target / --detections of one image as explain_full takes them."""
    if args.detections:
        found = explainer.detect(x, score=args.score)[0]
        if len(found) < args.detections:
            raise BadRequest(f"the image has {len(found)} detections with score >= {args.score}; "
                             f"--detections asks {args.detections} (lower --score)", "detections")
        return [found[:args.detections]]
    if not args.target:
        return None
    parsed = [parse_target(t) for t in args.target]
    if all(isinstance(t, int) for t in parsed) and explainer.kind == "classifier" and len(parsed) == 1:
        return parsed
    found = explainer.detect(x, score=args.score)[0] if any(isinstance(t, tuple) for t in parsed) else []
    row = []
    for t in parsed:
        if isinstance(t, tuple):
            if not 0 <= t[1] < len(found):
                raise BadRequest(f"the image has {len(found)} detections with score >= {args.score}; "
                                 f"detection:{t[1]} is not one", "target")
            t = found[t[1]]
        elif isinstance(t, int):
            from .targets import Class
            t = Class(t)
        row.append(t)
    return [row]


def cmd_explain(args) -> None:
    if args.server:
        return explain_remote(args)
    from . import images
    from .explainer import Explainer
    from .model import Model

    options = dict(_option(o) for o in args.option)
    model = Model(args.model)
    explainer = Explainer(model, threads=args.threads, perturbation_budget=args.perturbation_budget)
    shown = images.fit(images.read(args.image), model.preprocessing)
    x = images.normalise(shown, model.preprocessing)
    result = explainer.explain_full(x, args.method, _local_targets(args, explainer, x), args.layer, args.fusion,
                                    in_box=args.in_box, **options)
    maps = result.maps.reshape(-1, *result.maps.shape[-2:])
    objects = result.target_objects if result.target_objects is not None else [None]
    objects = objects[0] if objects and isinstance(objects[0], list) else objects
    found = [explainer.detection_for(explainer.predict(x)[0], t) for t in objects] \
        if explainer.kind == "detector" and objects[0] is not None else [None] * len(maps)
    print(f"{args.method} on {model.name} ({explainer.provider}), layers {result.layers[:3]}"
          f"{' ...' if len(result.layers) > 3 else ''}" + (f", options {result.options}" if result.options else ""))
    for k, (t, d) in enumerate(zip(objects, found)):
        if d is not None:
            print(f"  map {k}: detection {d.label!r} score {d.score:.3f} box "
                  f"({', '.join(f'{v:.0f}' for v in d.box)})")
        else:
            target = int(np.asarray(result.targets).reshape(-1)[k])
            name = type(t).__name__ if t is not None else "class"
            print(f"  map {k}: {name} {target} '{model.label(target)}'" if target >= 0 else f"  map {k}: {t}")
        if result.warnings and result.warnings[k]:
            print(f"  warning, map {k}: {result.warnings[k]}", file=sys.stderr)
    if args.save_map:
        Path(args.save_map).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.save_map, maps[0] if len(maps) == 1 else maps)
        print(f"wrote {args.save_map} {maps[0].shape if len(maps) == 1 else maps.shape} float32 in [0, 1]")
    if args.out:   # one overlay: the maps' maximum, with every box
        picture = images.overlay(shown, maps.max(axis=0), alpha=args.alpha)
        for d in found:
            if d is not None:
                picture = images.draw_box(picture, d.box, f"{d.label} {d.score:.2f}")
        images.write_png(args.out, picture)
        print(f"wrote {args.out}")


def cmd_evaluate(args) -> None:
    from tqdm import tqdm

    from . import images
    from .evaluation import Settings
    from .explainer import Explainer
    from .methods import METHODS, lookup
    from .model import Model
    from .study import Study, run

    for flag, value, least in (("n", args.n, 1), ("batch", args.batch, 1), ("sanity", args.sanity, 0),
                               ("sanity-images", args.sanity_images, 1), ("gallery", args.gallery, 0)):
        if value < least:   # fail before any work
            raise BadRequest(f"--{flag} must be at least {least}, got {value}", flag)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise BadRequest(f"--methods names no method; available: {', '.join(sorted(METHODS))}", "methods")
    for method in methods:
        lookup(method, "methods")   # fail before any work
    options: dict[str, dict] = {}
    for text in args.option:
        key, value = _option(text)
        method, dot, name = key.partition(".")
        if not dot or method not in methods:
            raise BadRequest(f"--option takes METHOD.KEY=VALUE for one of {methods}, got {text!r}", "option")
        options.setdefault(method, {})[name] = value
    model = Model(args.model)
    explainer = Explainer(model, threads=args.threads, perturbation_budget=args.perturbation_budget)
    layers = args.layer

    def top1(x: np.ndarray) -> int:
        return int(explainer.predict(x).argmax())

    if explainer.kind == "detector":
        _evaluate_detector(args, model, explainer, methods, options)
        return
    if explainer.kind != "classifier":
        raise BadRequest(f"evaluate scores classifiers and detectors; {model.name} is a {explainer.kind}", "model")
    if args.dataset in ("synthetic", "bench"):
        size = model.preprocessing.crop or explainer.info.spatial[0]
        if not isinstance(size, int) or (not model.preprocessing.crop and explainer.info.spatial[1] != size):
            raise BadRequest(f"synthetic scenes are square: give {model.name} a preprocessing crop (its input is "
                             f"{explainer.info.spatial})", "dataset")
        labeller, labeller_model = explainer, model
        if args.label_model:
            labeller_model = Model(args.label_model)
            labeller = Explainer(labeller_model, threads=args.threads)
        # an object alone is a photo crop of any size: the labelling model's full preprocessing applies
        def label_fn(rgb: np.ndarray) -> int:
            return int(labeller.predict(images.to_tensor(rgb, labeller_model.preprocessing)).argmax())

        target = f"label: {labeller_model.name}'s top-1 on the object alone (the first object of a pair)"
        if args.dataset == "synthetic":
            from .data.synthetic import synthetic_scenes
            scenes = synthetic_scenes(args.n, label_fn, size, args.seed)
        else:
            from .data.benchmark import benchmark_scenes

            def correct(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
                x = np.concatenate([images.normalise(image, model.preprocessing) for image in rgb])
                return explainer.predict(x).argmax(axis=1) == labels

            try:
                scenes, drawn = benchmark_scenes(args.n, label_fn, correct, size, args.seed)
            except ValueError as error:
                raise BadRequest(f"{error} by {model.name}", "n") from error
            target += f"; kept only where {model.name}'s top-1 is the label ({args.n} of {drawn} candidates)"
    else:
        from .data.folder import folder_scenes
        scenes = folder_scenes(args.dataset, model.preprocessing,
                               lambda fitted: top1(images.normalise(fitted, model.preprocessing)), limit=args.n)
        target = "label: from the boxes file, else the model's top-1 on the image"
    settings = Settings(args.deletion_step, args.deletion_baseline, args.insertion_baseline, seed=args.seed,
                        forward_batch=args.forward_batch, road=not args.no_road)
    study = Study(methods, options, layers, settings, args.batch, args.gallery, args.sanity, args.sanity_images)
    with tqdm(total=len(scenes) * len(methods), unit="image", desc="evaluate", file=sys.stderr) as bar:
        results = run(explainer, model, scenes, study, Path(args.out), target,
                      args.dataset if args.dataset in ("synthetic", "bench") else Path(args.dataset).name,
                      bar.update)
    _print_means(results, ("adcc", "deletion_auc", "insertion_auc", "pointing_game", "seconds_per_image"), 12,
                 Path(args.out))


def _evaluate_detector(args, model, explainer, methods: list[str], options: dict) -> None:
    """A detector's study: each ground-truth box of a folder's boxes.json matched to a detection and explained."""
    from tqdm import tqdm

    from . import detection_study
    from .data.folder import folder_scenes
    from .evaluation import Settings
    from .study import Study
    if args.dataset == "synthetic":
        raise BadRequest(f"{model.name} is a detector: give --dataset a folder of images with a boxes.json "
                         '({"photo.jpg": {"boxes": [[x0, y0, x1, y1], ...], "classes": [class id per box]}}); '
                         "synthetic scenes are for classifiers", "dataset")
    if args.sanity:
        raise BadRequest("--sanity is for classifiers", "sanity")
    for method in methods:
        explainer.method_for_kind(method)   # fail before any work: a classifier-only method
    scenes = folder_scenes(args.dataset, model.preprocessing, lambda fitted: -1, limit=args.n)   # -1: any class
    settings = Settings(args.deletion_step, args.deletion_baseline, args.insertion_baseline, seed=args.seed)
    study = Study(methods, options, args.layer, settings, args.batch, args.gallery)
    out = Path(args.out)
    with tqdm(total=len(scenes) * len(methods), unit="image", desc="evaluate", file=sys.stderr) as bar:
        results = detection_study.run(explainer, model, scenes, study, out, Path(args.dataset).name, bar.update,
                                      args.score)
    keys = ("matched", "pointing_game", "energy_in_box", "box_share", "deletion_auc", "insertion_auc",
            "seconds_per_detection")
    print(f"{results['detections']} detections explained on {results['n']} images")
    _print_means(results, keys, 13, out)


def _print_means(results: dict, keys: tuple[str, ...], cell: int, out: Path) -> None:
    """A study's table: per method the mean of each metric in `keys` (— where undefined), then the files written."""
    width = max(len(m) for m in results["methods"])
    print(f"{'method':<{width}}  " + "  ".join(f"{k[:cell]:>{cell}}" for k in keys))
    for method, entry in results["methods"].items():
        cells = [entry["metrics"][k]["mean"] for k in keys]
        print(f"{method:<{width}}  " + "  ".join(" " * (cell - 1) + "—" if c is None else f"{c:{cell}.4g}"
                                                 for c in cells))
    print(f"wrote {out / 'results.json'} and {out / 'index.html'}")


def cmd_serve(args) -> None:
    import asyncio
    import os

    from .server.app import Limits, ServerConfig, serve
    config = ServerConfig(
        models=args.models, port=args.port, host=args.host, threads=args.threads, workers=args.workers,
        max_queue=args.max_queue, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port, metrics_host=args.metrics_host,
        grace=args.grace, token=os.environ.get(args.token_env) if args.token_env else None,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        max_request_bytes=args.max_request_bytes,
        limits=Limits(args.max_image_bytes, args.max_image_pixels, args.max_images), log_level=args.log_level,
        max_connection_age=args.max_connection_age, drain_delay=args.drain_delay, max_sessions=args.max_sessions,
        perturbation_budget=args.perturbation_budget)
    if args.token_env and not config.token:
        raise BadRequest(f"--token-env {args.token_env}: that environment variable is empty or unset", "token")
    for flag in ("grace", "drain_delay", "max_connection_age"):
        if (getattr(args, flag) or 0) < 0:
            raise BadRequest(f"--{flag.replace('_', '-')} must not be negative", flag)
    for flag in ("workers", "max_batch", "max_images", "max_sessions", "perturbation_budget"):
        if getattr(args, flag) < 1:
            raise BadRequest(f"--{flag.replace('_', '-')} must be at least 1", flag)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise BadRequest("TLS needs both --tls-cert and --tls-key", "tls")
    asyncio.run(serve(config))


def _remote_targets(args):
    if args.detections:
        return {"detections": args.detections}
    if not args.target:
        return None
    parsed = [parse_target(t) for t in args.target]
    if all(isinstance(t, int) for t in parsed):
        return parsed
    from .targets import Class
    return {"objects": [[t[1] if isinstance(t, tuple) else Class(t) if isinstance(t, int) else t for t in parsed]]}


def explain_remote(args) -> None:
    """`camserve explain --server HOST:PORT`: the same request, answered by a camserve server."""
    import grpc

    from .client import Client
    options = dict(_option(o) for o in args.option)
    import os
    token = os.environ.get(args.token_env) if args.token_env else None
    with Client(args.server, token=token, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key) as client:
        try:
            client.wait_ready(args.wait)
            reply = client.explain([args.image], args.method, Path(str(args.model)).name, _remote_targets(args),
                                   args.layer, overlay=bool(args.out), fusion=args.fusion,
                                   original_size=args.original_size,
                                   detect={"score": args.score, "in_box": args.in_box}, **options)
        except grpc.RpcError as error:
            raise BadRequest(f"{error.code().name}: {error.details()}", "server") from error
        except TimeoutError as error:
            raise BadRequest(str(error), "server") from error
    items = reply.images[0].explanations
    print(f"{reply.method} on {reply.model} v{reply.version} at {args.server} ({reply.provider}), layers "
          f"{list(reply.layers)[:3]}")
    for k, item in enumerate(items):
        if item.HasField("detection"):
            d = item.detection
            print(f"  map {k}: detection '{d.label}' score {d.score:.3f} box ({d.x0:.0f}, {d.y0:.0f}, {d.x1:.0f}, "
                  f"{d.y1:.0f})")
        else:
            print(f"  map {k}: class {item.class_id} '{item.label}' p={item.score:.3f}")
        if item.warning:
            print(f"  warning, map {k}: {item.warning}", file=sys.stderr)
    if args.save_map:
        Path(args.save_map).parent.mkdir(parents=True, exist_ok=True)
        maps = Client.maps(reply)[0]
        np.save(args.save_map, maps[0] if len(maps) == 1 else np.stack(maps))
        print(f"wrote {args.save_map}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        for k, item in enumerate(items):
            path = Path(args.out) if k == 0 else Path(args.out).with_stem(f"{Path(args.out).stem}-{k}")
            path.write_bytes(item.overlay_png)
            print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camserve", description="Class Activation Maps for any ONNX image CNN")
    parser.add_argument("--version", action="version", version=f"camserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print the model's input, logits and candidate target layers")
    p.add_argument("model")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("rewrite", help="write an explainable graph (gradients or exposed activations)")
    p.add_argument("model")
    p.add_argument("--layers", nargs="*", default=None, help="ONNX tensor names (default: the default layer)")
    p.add_argument("--kind", choices=["gradients", "forward"], default="gradients")
    p.add_argument("--input-gradient", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_rewrite)

    p = sub.add_parser("explain", help="explain one image")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model.onnx or a model folder")
    p.add_argument("--image", required=True)
    p.add_argument("--method", default=DEFAULT)
    p.add_argument("--target", action="append", default=None,
                   help="CLASS, box:X0,Y0,X1,Y1[:CLASS], region:CLASS or detection:K; repeat for several maps "
                        "(default: top-1 class, top detection, most predicted class)")
    p.add_argument("--detections", type=int, default=0, metavar="K",
                   help="detectors: explain the K best detections (one map each, one overlay with every box)")
    p.add_argument("--score", type=float, default=0.25, help="detectors: the detections' least score")
    p.add_argument("--in-box", action="store_true",
                   help="detectors: each map min-maxed inside its detection's box, 0 outside")
    p.add_argument("--layer", action="append", default=None, help="target layer; repeat for several")
    p.add_argument("--fusion", choices=["mean", "max", "adaptive"], default=None)
    p.add_argument("--option", action="append", default=[], help="method option KEY=VALUE; repeatable")
    p.add_argument("--out", default=None, help="overlay PNG")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--save-map", default=None, help="raw map as .npy")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--perturbation-budget", type=int, default=32,
                   help="perturbation methods: at most this many images' worth of perturbed copies per run")
    p.add_argument("--server", default=None, help="HOST:PORT of a camserve server; --model is then its model name")
    p.add_argument("--wait", type=float, default=60.0, help="with --server: seconds to wait for it to be healthy")
    p.add_argument("--original-size", action="store_true", help="with --server: map and overlay at the image's size")
    p.add_argument("--token-env", default=None, metavar="VAR", help="with --server: bearer token from this variable")
    p.add_argument("--tls-ca", default=None, help="with --server: TLS, trusting this CA (PEM)")
    p.add_argument("--tls-cert", default=None, help="with --server: client certificate for mutual TLS")
    p.add_argument("--tls-key", default=None, help="with --server: its private key")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate",
                       help="score methods with every metric on a dataset; writes results.json + index.html")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model.onnx or a model folder")
    p.add_argument("--methods", default=DEFAULT, help="comma-separated method names")
    p.add_argument("--dataset", default="synthetic", help="'synthetic' (24-scene cycle), 'bench' (scenes the "
                   "model classifies as their label, see docs/evaluation.md) or a folder of images with boxes.json")
    p.add_argument("--label-model", default=None, help="synthetic data: the model whose top-1 on each object "
                   "alone is its label (default: the evaluated model)")
    p.add_argument("--n", type=int, default=30, help="number of images (synthetic scenes, or the first N of a folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layer", action="append", default=None, help="target layer; repeat for several")
    p.add_argument("--option", action="append", default=[], help="METHOD.KEY=VALUE method option; repeatable")
    p.add_argument("--batch", type=int, default=8, help="images explained per call")
    p.add_argument("--deletion-step", type=int, default=None, help="pixels per deletion/insertion step "
                   "(default: 8 rows)")
    p.add_argument("--deletion-baseline", default="zeros", choices=["zeros", "blur", "mean"])
    p.add_argument("--insertion-baseline", default="blur", choices=["zeros", "blur", "mean"])
    p.add_argument("--no-road", action="store_true", help="skip ROAD (and ARCC): its imputation is about 3/4 of "
                   "the metrics' time")
    p.add_argument("--sanity", type=int, default=0, metavar="STAGES",
                   help="cascading randomisation checkpoints (0: no sanity check)")
    p.add_argument("--sanity-images", type=int, default=4)
    p.add_argument("--gallery", type=int, default=12, help="images shown in the report's gallery")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--perturbation-budget", type=int, default=32,
                   help="perturbation methods: at most this many images' worth of perturbed copies per run")
    p.add_argument("--forward-batch", type=int, default=32, help="images per forward of the metrics' perturbed copies")
    p.add_argument("--score", type=float, default=0.25, help="a detector's: the least score of a detection matched "
                   "to a ground-truth box")
    p.set_defaults(func=cmd_evaluate)

    # ServerConfig's defaults: the one place the server's are written
    from .server.app import default

    p = sub.add_parser("serve", help="serve camserve.v1 over gRPC from a model repository",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=str(DEFAULT_MODEL.parent), help="repository: DIR/<name>/<version>/model.onnx")
    p.add_argument("--port", type=int, default=default("port"), help="gRPC port (0: a free one)")
    p.add_argument("--host", default=default("host"), help="gRPC address to listen on ([::]: every address)")
    p.add_argument("--threads", type=int, default=default("threads"), help="ONNX Runtime threads per run")
    p.add_argument("--workers", type=int, default=default("workers"), help="runs at once")
    p.add_argument("--max-queue", type=int, default=default("max_queue"), help="requests waiting beyond "
                   "--workers; more are refused with RESOURCE_EXHAUSTED")
    p.add_argument("--max-batch", type=int, default=default("max_batch"),
                   help="images per micro-batch of like requests (1: off)")
    p.add_argument("--max-delay-ms", type=float, default=default("max_delay_ms"), help="how long a micro-batch "
                   "waits for company; with 0 it still gathers the requests that arrive while every run slot is busy")
    p.add_argument("--metrics-port", type=int, default=default("metrics_port"),
                   help="Prometheus /metrics port (-1: none)")
    p.add_argument("--metrics-host", default=default("metrics_host"),
                   help="address /metrics listens on (None: --host's)")
    p.add_argument("--grace", type=float, default=default("grace"), help="seconds calls in flight get after SIGTERM")
    p.add_argument("--drain-delay", type=float, default=default("drain_delay"), help="seconds after SIGTERM during "
                   "which the server, NOT_SERVING, still refuses new calls with UNAVAILABLE (clients retry them "
                   "elsewhere) before it stops listening; within --grace. Set it to how long your balancer takes "
                   "to notice")
    p.add_argument("--max-connection-age", type=float, default=default("max_connection_age"),
                   help="seconds before each client connection is closed and reopened, so that clients balancing "
                   "over DNS find replicas added since (None: never)")
    p.add_argument("--token-env", default=None, metavar="VAR",
                   help="require `authorization: Bearer <token>` on every call but health; the token is read "
                   "from this environment variable (never from the command line, which `ps` shows)")
    p.add_argument("--tls-cert", type=Path, default=default("tls_cert"), help="server certificate (PEM) for TLS")
    p.add_argument("--tls-key", type=Path, default=default("tls_key"), help="its private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, default=default("tls_client_ca"),
                   help="mutual TLS: CA that signs client certificates")
    p.add_argument("--max-request-bytes", type=int, default=default("max_request_bytes"))
    p.add_argument("--max-image-bytes", type=int, default=default("image_bytes"))
    p.add_argument("--max-image-pixels", type=int, default=default("image_pixels"),
                   help="decoded pixels per image, checked before decoding")
    p.add_argument("--max-images", type=int, default=default("images_per_request"),
                   help="maps per request: images, times k with top_k targets")
    p.add_argument("--max-sessions", type=int, default=default("max_sessions"), help="ONNX Runtime sessions kept "
                   "per model (each a copy of its weights), the least recently used evicted; layer sets and input "
                   "sizes each take one")
    p.add_argument("--perturbation-budget", type=int, default=default("perturbation_budget"),
                   help="perturbation methods: at most this many images' worth of perturbed copies per run")
    p.add_argument("--log-level", default=default("log_level"), choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (BadRequest, gt.GraphError) as error:
        print(f"camserve: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
