from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]

class OutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_KIND_UNSPECIFIED: _ClassVar[OutputKind]
    OUTPUT_KIND_MAP: _ClassVar[OutputKind]
    OUTPUT_KIND_OVERLAY_PNG: _ClassVar[OutputKind]
    OUTPUT_KIND_BOTH: _ClassVar[OutputKind]

class OutputSize(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_SIZE_UNSPECIFIED: _ClassVar[OutputSize]
    OUTPUT_SIZE_INPUT: _ClassVar[OutputSize]
    OUTPUT_SIZE_ORIGINAL: _ClassVar[OutputSize]

class CostClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COST_CLASS_UNSPECIFIED: _ClassVar[CostClass]
    COST_CLASS_FORWARD: _ClassVar[CostClass]
    COST_CLASS_FEW_FORWARDS: _ClassVar[CostClass]
    COST_CLASS_PER_CHANNEL: _ClassVar[CostClass]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_UINT8: DataType
OUTPUT_KIND_UNSPECIFIED: OutputKind
OUTPUT_KIND_MAP: OutputKind
OUTPUT_KIND_OVERLAY_PNG: OutputKind
OUTPUT_KIND_BOTH: OutputKind
OUTPUT_SIZE_UNSPECIFIED: OutputSize
OUTPUT_SIZE_INPUT: OutputSize
OUTPUT_SIZE_ORIGINAL: OutputSize
COST_CLASS_UNSPECIFIED: CostClass
COST_CLASS_FORWARD: CostClass
COST_CLASS_FEW_FORWARDS: CostClass
COST_CLASS_PER_CHANNEL: CostClass

class Image(_message.Message):
    __slots__ = ("encoded", "tensor")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    tensor: Tensor
    def __init__(self, encoded: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DataType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Targets(_message.Message):
    __slots__ = ("class_ids", "top_k", "weights", "objects", "detections")
    CLASS_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    class_ids: ClassIds
    top_k: int
    weights: ClassWeights
    objects: TargetLists
    detections: int
    def __init__(self, class_ids: _Optional[_Union[ClassIds, _Mapping]] = ..., top_k: _Optional[int] = ..., weights: _Optional[_Union[ClassWeights, _Mapping]] = ..., objects: _Optional[_Union[TargetLists, _Mapping]] = ..., detections: _Optional[int] = ...) -> None: ...

class TargetLists(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[TargetList]
    def __init__(self, images: _Optional[_Iterable[_Union[TargetList, _Mapping]]] = ...) -> None: ...

class TargetList(_message.Message):
    __slots__ = ("targets",)
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    def __init__(self, targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("region", "box", "detection", "similarity")
    REGION_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    region: RegionTarget
    box: BoxTarget
    detection: int
    similarity: SimilarityTarget
    def __init__(self, region: _Optional[_Union[RegionTarget, _Mapping]] = ..., box: _Optional[_Union[BoxTarget, _Mapping]] = ..., detection: _Optional[int] = ..., similarity: _Optional[_Union[SimilarityTarget, _Mapping]] = ...) -> None: ...

class RegionTarget(_message.Message):
    __slots__ = ("class_id", "mask")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    mask: Tensor
    def __init__(self, class_id: _Optional[int] = ..., mask: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class BoxTarget(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1", "class_id", "iou", "terms")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    class_id: int
    iou: float
    terms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ..., class_id: _Optional[int] = ..., iou: _Optional[float] = ..., terms: _Optional[_Iterable[str]] = ...) -> None: ...

class SimilarityTarget(_message.Message):
    __slots__ = ("vector",)
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, vector: _Optional[_Iterable[float]] = ...) -> None: ...

class DetectOptions(_message.Message):
    __slots__ = ("score", "iou", "max_detections", "in_box")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    IN_BOX_FIELD_NUMBER: _ClassVar[int]
    score: float
    iou: float
    max_detections: int
    in_box: bool
    def __init__(self, score: _Optional[float] = ..., iou: _Optional[float] = ..., max_detections: _Optional[int] = ..., in_box: _Optional[bool] = ...) -> None: ...

class ClassIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ClassWeights(_message.Message):
    __slots__ = ("values", "classes")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    classes: int
    def __init__(self, values: _Optional[_Iterable[float]] = ..., classes: _Optional[int] = ...) -> None: ...

class OptionValue(_message.Message):
    __slots__ = ("number", "integer", "text", "flag")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    flag: bool
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "version", "images", "method", "options", "targets", "layers", "fusion", "output", "size", "request_id", "detect")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OptionValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OptionValue, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETECT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    method: str
    options: _containers.MessageMap[str, OptionValue]
    targets: Targets
    layers: _containers.RepeatedScalarFieldContainer[str]
    fusion: str
    output: OutputKind
    size: OutputSize
    request_id: str
    detect: DetectOptions
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., method: _Optional[str] = ..., options: _Optional[_Mapping[str, OptionValue]] = ..., targets: _Optional[_Union[Targets, _Mapping]] = ..., layers: _Optional[_Iterable[str]] = ..., fusion: _Optional[str] = ..., output: _Optional[_Union[OutputKind, str]] = ..., size: _Optional[_Union[OutputSize, str]] = ..., request_id: _Optional[str] = ..., detect: _Optional[_Union[DetectOptions, _Mapping]] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1", "class_id", "label", "score", "original_box")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_BOX_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    class_id: int
    label: str
    score: float
    original_box: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ..., class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., original_box: _Optional[_Iterable[float]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("class_id", "label", "score", "map", "overlay_png", "detection", "warning")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    map: Tensor
    overlay_png: bytes
    detection: Detection
    warning: str
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., map: _Optional[_Union[Tensor, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., detection: _Optional[_Union[Detection, _Mapping]] = ..., warning: _Optional[str] = ...) -> None: ...

class ImageExplanations(_message.Message):
    __slots__ = ("explanations",)
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    explanations: _containers.RepeatedCompositeFieldContainer[Explanation]
    def __init__(self, explanations: _Optional[_Iterable[_Union[Explanation, _Mapping]]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model", "version", "method", "layers", "options", "images", "provider", "seconds", "request_id")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OptionValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OptionValue, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    method: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    options: _containers.MessageMap[str, OptionValue]
    images: _containers.RepeatedCompositeFieldContainer[ImageExplanations]
    provider: str
    seconds: float
    request_id: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., method: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., options: _Optional[_Mapping[str, OptionValue]] = ..., images: _Optional[_Iterable[_Union[ImageExplanations, _Mapping]]] = ..., provider: _Optional[str] = ..., seconds: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1", "class_id")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    x0: int
    y0: int
    x1: int
    y1: int
    class_id: int
    def __init__(self, x0: _Optional[int] = ..., y0: _Optional[int] = ..., x1: _Optional[int] = ..., y1: _Optional[int] = ..., class_id: _Optional[int] = ...) -> None: ...

class LabelledImage(_message.Message):
    __slots__ = ("image", "label", "boxes")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    image: Image
    label: int
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., label: _Optional[int] = ..., boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("model", "version", "images", "methods", "options", "layers", "deletion_step", "deletion_baseline", "insertion_baseline", "request_id", "detect")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OptionValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OptionValue, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DELETION_STEP_FIELD_NUMBER: _ClassVar[int]
    DELETION_BASELINE_FIELD_NUMBER: _ClassVar[int]
    INSERTION_BASELINE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETECT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    images: _containers.RepeatedCompositeFieldContainer[LabelledImage]
    methods: _containers.RepeatedScalarFieldContainer[str]
    options: _containers.MessageMap[str, OptionValue]
    layers: _containers.RepeatedScalarFieldContainer[str]
    deletion_step: int
    deletion_baseline: str
    insertion_baseline: str
    request_id: str
    detect: DetectOptions
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[LabelledImage, _Mapping]]] = ..., methods: _Optional[_Iterable[str]] = ..., options: _Optional[_Mapping[str, OptionValue]] = ..., layers: _Optional[_Iterable[str]] = ..., deletion_step: _Optional[int] = ..., deletion_baseline: _Optional[str] = ..., insertion_baseline: _Optional[str] = ..., request_id: _Optional[str] = ..., detect: _Optional[_Union[DetectOptions, _Mapping]] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("mean", "low", "high", "defined")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    DEFINED_FIELD_NUMBER: _ClassVar[int]
    mean: float
    low: float
    high: float
    defined: bool
    def __init__(self, mean: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., defined: _Optional[bool] = ...) -> None: ...

class MethodScores(_message.Message):
    __slots__ = ("method", "metrics", "deletion_curve", "insertion_curve", "fractions")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Interval
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Interval, _Mapping]] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DELETION_CURVE_FIELD_NUMBER: _ClassVar[int]
    INSERTION_CURVE_FIELD_NUMBER: _ClassVar[int]
    FRACTIONS_FIELD_NUMBER: _ClassVar[int]
    method: str
    metrics: _containers.MessageMap[str, Interval]
    deletion_curve: _containers.RepeatedScalarFieldContainer[float]
    insertion_curve: _containers.RepeatedScalarFieldContainer[float]
    fractions: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, method: _Optional[str] = ..., metrics: _Optional[_Mapping[str, Interval]] = ..., deletion_curve: _Optional[_Iterable[float]] = ..., insertion_curve: _Optional[_Iterable[float]] = ..., fractions: _Optional[_Iterable[float]] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("model", "version", "methods", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    methods: _containers.RepeatedCompositeFieldContainer[MethodScores]
    request_id: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[MethodScores, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "versions", "ready")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    ready: bool
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., ready: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class LayerDescription(_message.Message):
    __slots__ = ("name", "shape", "op", "layout")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[str]
    op: str
    layout: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[str]] = ..., op: _Optional[str] = ..., layout: _Optional[str] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("resize", "crop", "mean", "std", "color", "scale", "letterbox", "pad")
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    LETTERBOX_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    resize: int
    crop: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    color: str
    scale: float
    letterbox: int
    pad: int
    def __init__(self, resize: _Optional[int] = ..., crop: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., color: _Optional[str] = ..., scale: _Optional[float] = ..., letterbox: _Optional[int] = ..., pad: _Optional[int] = ...) -> None: ...

class ModelDescription(_message.Message):
    __slots__ = ("name", "version", "input_name", "input_shape", "layout", "num_classes", "labels", "default_layer", "layers", "preprocessing", "kind", "head", "output_shape", "precision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYER_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    input_name: str
    input_shape: _containers.RepeatedScalarFieldContainer[str]
    layout: str
    num_classes: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    default_layer: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerDescription]
    preprocessing: Preprocessing
    kind: str
    head: str
    output_shape: _containers.RepeatedScalarFieldContainer[str]
    precision: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., input_name: _Optional[str] = ..., input_shape: _Optional[_Iterable[str]] = ..., layout: _Optional[str] = ..., num_classes: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., default_layer: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerDescription, _Mapping]]] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., kind: _Optional[str] = ..., head: _Optional[str] = ..., output_shape: _Optional[_Iterable[str]] = ..., precision: _Optional[str] = ...) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MethodDescription(_message.Message):
    __slots__ = ("name", "summary", "options", "cost_class", "cost", "needs_gradients", "kinds")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OptionValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OptionValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    COST_CLASS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    NEEDS_GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    summary: str
    options: _containers.MessageMap[str, OptionValue]
    cost_class: CostClass
    cost: str
    needs_gradients: bool
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., summary: _Optional[str] = ..., options: _Optional[_Mapping[str, OptionValue]] = ..., cost_class: _Optional[_Union[CostClass, str]] = ..., cost: _Optional[str] = ..., needs_gradients: _Optional[bool] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ("methods",)
    METHODS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[MethodDescription]
    def __init__(self, methods: _Optional[_Iterable[_Union[MethodDescription, _Mapping]]] = ...) -> None: ...
