"""Name -> component tables. Each entry names the config keys it takes and where its factory
lives, so validation, `mltrain list` and building share one source without importing torch."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


@dataclass(frozen=True)
class Entry:
    name: str
    help: str
    factory: str = ""  # "module:attribute", imported only when built
    params: tuple[str, ...] = ()  # config keys of its section that it takes
    tags: frozenset[str] = field(default_factory=frozenset)  # e.g. data kinds an arch accepts

    def load(self) -> Callable[..., Any]:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


class Registry:
    def __init__(self, kind: str, entries: list[Entry]):
        self.kind = kind
        self._entries = {entry.name: entry for entry in entries}

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def unknown_message(self, name: object) -> str:
        return (f"unknown {self.kind} '{name}', {did_you_mean(str(name), self.names())}"
                f"choose from: {', '.join(self.names())}")

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]


# Tags. Datasets carry the kind of sample they yield and the tasks their targets allow;
# architectures carry the sample kinds they read; heads carry the task they solve.
IMAGE = "image"  # (C, H, W)
VECTOR = "vector"  # (F,) features, e.g. a table row or a 2-D point
SEQUENCE = "sequence"  # (L,) or (L, F): L steps of F features (1 if absent)
TOKENS = "tokens"  # (L,) integer token ids, e.g. characters of a text
CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = frozenset({CLASSIFICATION, REGRESSION})

_VISION_PARAMS = ("root", "download", "augment")

DATASETS = Registry("dataset", [
    Entry("digits", "scikit-learn's 1,797 8x8 handwritten digits, samples (1, 8, 8), 10 classes",
          "mltrain.data.builtin:digits", (), frozenset({IMAGE, CLASSIFICATION})),
    Entry("spirals", "2-D points on N interleaved spiral arms, generated with the seed",
          "mltrain.data.builtin:spirals", ("classes", "points", "noise"), frozenset({VECTOR, CLASSIFICATION})),
    Entry("parity", "bit strings (L,), label: odd number of ones; generated with the seed",
          "mltrain.data.sequences:parity", ("length", "samples"), frozenset({SEQUENCE, CLASSIFICATION})),
    Entry("adding", "the adding problem: steps (L, 2) of (value, marker), target: sum of the 2 marked "
          "values (regression); generated with the seed",
          "mltrain.data.sequences:adding", ("length", "samples"), frozenset({SEQUENCE, REGRESSION})),
    Entry("sorting", "L one-hot digits (L, vocab_size), targets (L,): the digits sorted, a class per "
          "position; generated with the seed",
          "mltrain.data.sequences:sorting", ("length", "samples", "vocab_size"),
          frozenset({SEQUENCE, CLASSIFICATION})),
    Entry("text", "a UTF-8 file (data.path) as characters: samples (block_size,) token ids, targets "
          "the next character at each position",
          "mltrain.data.text:text", ("path", "block_size", "windows"), frozenset({TOKENS, CLASSIFICATION})),
    *(Entry(name, f"torchvision's {title}: {what}, a train and a test split; files under data.root",
            f"mltrain.data.vision:{name}", _VISION_PARAMS, frozenset({IMAGE, CLASSIFICATION}))
      for name, title, what in (
          ("mnist", "MNIST", "70,000 28x28 grey handwritten digits (1, 28, 28), 10 classes"),
          ("fashion_mnist", "FashionMNIST", "70,000 28x28 grey clothing images (1, 28, 28), 10 classes"),
          ("kmnist", "KMNIST", "70,000 28x28 grey cursive Japanese characters (1, 28, 28), 10 classes"),
          ("cifar10", "CIFAR-10", "60,000 32x32 colour images (3, 32, 32), 10 classes"),
          ("cifar100", "CIFAR-100", "60,000 32x32 colour images (3, 32, 32), 100 classes"),
          ("svhn", "SVHN", "99,289 32x32 colour house-number digits (3, 32, 32), 10 classes; needs scipy"),
      )),
    Entry("image_folder", "your images: data.root/<class>/*.png|jpg|jpeg|bmp|webp (or data.root/train|val|test/"
          "<class>/...), resized to data.image_size, kept in memory up to data.max_memory_mb, else streamed",
          "mltrain.data.image_folder:image_folder",
          ("root", "image_size", "test_split", "max_memory_mb", "workers", "augment"),
          frozenset({IMAGE, CLASSIFICATION})),
    Entry("csv", "a table (data.path) with a header row: data.target column predicted from data.features; "
          "text columns one-hot, numbers standardised",
          "mltrain.data.tabular:csv", ("path", "target", "features", "task", "test_split"),
          frozenset({VECTOR, CLASSIFICATION, REGRESSION})),
    Entry("npz", "a NumPy .npz file (data.path) with x_train, y_train and optionally x_val, y_val, x_test, y_test",
          "mltrain.data.arrays:npz", ("path", "task", "test_split"),
          frozenset({IMAGE, VECTOR, SEQUENCE, CLASSIFICATION, REGRESSION})),
])

AUGMENTATIONS = Registry("augmentation", [
    Entry("crop", "pad by `padding` pixels, then crop back to size at a random place",
          "mltrain.data.augment:crop", ("padding",)),
    Entry("flip", "mirror left-right, half of the images", "mltrain.data.augment:flip"),
    Entry("translate", "shift by up to `pixels` whole pixels along each axis",
          "mltrain.data.augment:translate", ("pixels",)),
    Entry("rotate", "rotate by up to `degrees` degrees either way", "mltrain.data.augment:rotate", ("degrees",)),
    Entry("cutout", "zero a `size` x `size` square at a random place", "mltrain.data.augment:cutout", ("size",)),
    Entry("noise", "add Gaussian noise of std `std` to the (normalised) input", "mltrain.data.augment:noise",
          ("std",)),
])

_RECURRENT_PARAMS = ("hidden_size", "layers", "bidirectional", "dropout", "readout")

ARCHITECTURES = Registry("architecture", [
    Entry("mlp", "multi-layer perceptron; flattens any sample",
          "mltrain.models.mlp:MLP", ("hidden", "activation", "norm", "dropout"),
          frozenset({IMAGE, VECTOR, SEQUENCE})),
    Entry("cnn", "convolutional network: Conv1d on (L,) or (C, L) signals, Conv2d on (C, H, W) images; "
          "global average pool, so any size fits",
          "mltrain.models.cnn:CNN",
          ("channels", "kernel_size", "stride", "padding", "pool", "norm", "activation", "dropout"),
          frozenset({IMAGE, SEQUENCE})),
    Entry("resnet18", "torchvision's ResNet-18, untrained; small_input: CIFAR-style stem for small images",
          "mltrain.models.resnet:resnet18", ("small_input", "activation"), frozenset({IMAGE})),
    Entry("resnet34", "torchvision's ResNet-34, untrained; small_input: CIFAR-style stem for small images",
          "mltrain.models.resnet:resnet34", ("small_input", "activation"), frozenset({IMAGE})),
    Entry("rnn", "Elman RNN (tanh) over sequence steps or image rows",
          "mltrain.models.recurrent:RNN", _RECURRENT_PARAMS, frozenset({SEQUENCE, IMAGE})),
    Entry("lstm", "LSTM over sequence steps or image rows",
          "mltrain.models.recurrent:LSTM", _RECURRENT_PARAMS, frozenset({SEQUENCE, IMAGE})),
    Entry("gru", "GRU over sequence steps or image rows",
          "mltrain.models.recurrent:GRU", _RECURRENT_PARAMS, frozenset({SEQUENCE, IMAGE})),
    Entry("transformer", "pre-norm transformer encoder classifier over sequence steps, image rows "
          "or image patches",
          "mltrain.models.transformer:Transformer",
          ("d_model", "heads", "layers", "mlp_ratio", "patch_size", "positions", "pooling", "activation",
           "dropout"),
          frozenset({SEQUENCE, IMAGE})),
    Entry("gpt", "decoder-only causal transformer language model over tokens (nanoGPT-style)",
          "mltrain.models.gpt:GPT", ("d_model", "heads", "layers", "mlp_ratio", "dropout", "activation"),
          frozenset({TOKENS})),
])

ACTIVATIONS = Registry("activation", [
    Entry("relu", "max(0, x)", "torch.nn:ReLU"),
    Entry("gelu", "Gaussian error linear unit", "torch.nn:GELU"),
    Entry("tanh", "hyperbolic tangent", "torch.nn:Tanh"),
    Entry("sigmoid", "logistic function", "torch.nn:Sigmoid"),
    Entry("silu", "x * sigmoid(x), a.k.a. swish", "torch.nn:SiLU"),
    Entry("leaky_relu", "max(0.01 x, x)", "torch.nn:LeakyReLU"),
    Entry("elu", "exponential linear unit", "torch.nn:ELU"),
])

HEADS = Registry("head", [
    Entry("softmax", "multi-class: one logit per class, cross-entropy on logits",
          "mltrain.heads:SoftmaxHead", tags=frozenset({CLASSIFICATION})),
    Entry("sigmoid", "binary or one-vs-rest: BCE-with-logits",
          "mltrain.heads:SigmoidHead", tags=frozenset({CLASSIFICATION})),
    Entry("linear", "regression: raw outputs, mean squared error",
          "mltrain.heads:LinearHead", tags=frozenset({REGRESSION})),
])

OPTIMIZERS = Registry("optimizer", [
    Entry("sgd", "stochastic gradient descent with momentum", "torch.optim:SGD",
          ("momentum", "nesterov")),
    Entry("adam", "Adam", "torch.optim:Adam", ("betas", "eps")),
    Entry("adamw", "Adam with decoupled weight decay", "torch.optim:AdamW", ("betas", "eps")),
    Entry("rmsprop", "RMSprop", "torch.optim:RMSprop", ("momentum", "eps")),
])

SCHEDULERS = Registry("scheduler", [
    Entry("constant", "the optimizer's lr throughout (after warmup)", "mltrain.optim:constant"),
    Entry("step", "multiply the lr by gamma every step_size steps", "mltrain.optim:step", ("step_size", "gamma")),
    Entry("multistep", "multiply the lr by gamma at each of the milestones (steps)", "mltrain.optim:multistep",
          ("milestones", "gamma")),
    Entry("exponential", "multiply the lr by decay after every step", "mltrain.optim:exponential", ("decay",)),
    Entry("cosine", "cosine decay from lr to min_lr over the run", "mltrain.optim:cosine",
          ("min_lr",)),
    Entry("onecycle", "rise from lr/25 to lr over pct_start of the run, then anneal (cosine) to lr/2.5e5",
          "mltrain.optim:onecycle", ("pct_start",)),
    Entry("plateau", "multiply the lr by gamma when train.monitor stops improving for patience validations",
          "mltrain.optim:plateau", ("gamma", "patience")),
])

LOSSES = Registry("loss", [
    Entry("cross_entropy", "paired with head: softmax", "torch.nn.functional:cross_entropy"),
    Entry("bce_with_logits", "paired with head: sigmoid",
          "torch.nn.functional:binary_cross_entropy_with_logits"),
    Entry("mse", "paired with head: linear", "torch.nn.functional:mse_loss"),
])

REGISTRIES = {
    "architectures": ARCHITECTURES,
    "activations": ACTIVATIONS,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
    "datasets": DATASETS,
    "augmentations": AUGMENTATIONS,
    "heads": HEADS,
    "losses": LOSSES,
}
