"""MXNet in, MXNet out: a Gluon network trained with MXNet on Fashion-MNIST, slimmed to -50% FLOPs by spa-keras,
fine-tuned with MXNet again.

    python benchmarks/mxnet_slimming.py [--epochs 2] [--finetune 1] [--seed 0] [--quick]
    python benchmarks/mxnet_slimming.py --table benchmarks/reference/mxnet_slimming.json [--markdown]

Steps: train a small Gluon CNN (Conv/BatchNorm/ReLU blocks with a residual add, GAP, Dense; SGD momentum 0.9,
batch 128) for `--epochs`; export it as `PREFIX-symbol.json` + `PREFIX-0000.params`; `spa prune PREFIX --flops 0.5
--criterion l1 -o slim` (the same call in Python: `spa.prune(prefix, flops=0.5, criterion="l1", input_shape=...)`
then `spa.convert`); load the
slim checkpoint with `gluon.SymbolBlock.imports` and fine-tune it `--finetune` epochs with a Gluon Trainer.
Reported per model: test accuracy (10,000 images), parameters, FLOPs, checkpoint size on disk and MXNet CPU latency
(batch 1 and 64, hybridized, original and slim interleaved, lower quartile of 50 runs). JSON to
benchmarks/results/mxnet_slimming.json.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import spa_keras as spa  # noqa: E402
from tables import fashion_mnist_or_exit, table_options  # noqa: E402
from spa_keras.latency.timing import interleaved, lower_quartile  # noqa: E402
from tables import print_rows  # noqa: E402

SHAPE = (1, 1, 28, 28)


def build_net(mx):
    from mxnet.gluon import nn

    class Net(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.stem = self._block(nn, 32)
                self.body = self._block(nn, 32)
                self.down = self._block(nn, 64, strides=2)
                self.head = self._block(nn, 128, strides=2)
                self.pool = nn.GlobalAvgPool2D()
                self.fc = nn.Dense(10)

        @staticmethod
        def _block(nn, channels, strides=1):
            block = nn.HybridSequential()
            block.add(nn.Conv2D(channels, 3, strides, 1, use_bias=False), nn.BatchNorm(), nn.Activation("relu"))
            return block

        def hybrid_forward(self, F, x):
            x = self.stem(x)
            x = x + self.body(x)
            return self.fc(self.pool(self.head(self.down(x))))

    return Net()


def nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def train(mx, net, x, y, epochs, lr, seed):
    """SGD with momentum, batch 128, shuffled each epoch; returns seconds."""
    rng = np.random.default_rng(seed)
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr, "momentum": 0.9, "wd": 1e-4})
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    start = time.time()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 128):
            part = order[i:i + 128]
            data, label = mx.nd.array(x[part]), mx.nd.array(y[part])
            with mx.autograd.record():
                loss = loss_fn(net(data), label)
            loss.backward()
            trainer.step(len(part))
    mx.nd.waitall()
    return time.time() - start


def accuracy(mx, net, x, y):
    hits = 0
    for i in range(0, len(x), 500):
        hits += int((net(mx.nd.array(x[i:i + 500])).asnumpy().argmax(1) == y[i:i + 500]).sum())
    return hits / len(x)


def checkpoint_size(prefix):
    return sum(os.path.getsize(f) for f in (f"{prefix}-symbol.json", f"{prefix}-0000.params"))


def latencies(mx, original, slim, batch, runs):
    x = mx.nd.array(np.random.default_rng(0).normal(size=(batch,) + SHAPE[1:]).astype("float32"))

    def timer(net):
        return lambda: net(x).wait_to_read()

    a, b = interleaved((timer(original), timer(slim)), runs)
    return lower_quartile(a) * 1e3, lower_quartile(b) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="6,000 training images, 1 epoch each")
    table_options(parser)
    args = parser.parse_args()
    if args.table:
        print_table(json.load(open(args.table)), args.markdown)
        return
    (x_train, y_train), (x_test, y_test) = fashion_mnist_or_exit()
    x_train, x_test = nchw(x_train), nchw(x_test)
    if args.quick:
        x_train, y_train, args.epochs, args.finetune, args.runs = x_train[:6000], y_train[:6000], 1, 1, 10
    mx = spa.import_mxnet()
    mx.random.seed(args.seed)
    net = build_net(mx)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    seconds = train(mx, net, x_train, y_train, args.epochs, 0.05, args.seed)
    workdir = tempfile.mkdtemp(prefix="spa-mxnet-")
    prefix, slim_prefix = os.path.join(workdir, "net"), os.path.join(workdir, "slim")
    net.export(prefix, epoch=0)
    start = time.time()
    result = spa.prune(prefix, flops=0.5, criterion="l1", input_shape=SHAPE)
    spa.convert(result.model, slim_prefix, input_shape=SHAPE)
    prune_seconds = time.time() - start
    slim = mx.gluon.SymbolBlock.imports(f"{slim_prefix}-symbol.json", ["data"], f"{slim_prefix}-0000.params")
    slim_acc = accuracy(mx, slim, x_test, y_test)
    slim.hybridize()
    finetune_seconds = train(mx, slim, x_train, y_train, args.finetune, 0.01, args.seed + 1)
    rows = [dict(model="original", accuracy=accuracy(mx, net, x_test, y_test), params=result.before.params,
                 flops=result.before.flops, size=checkpoint_size(prefix), seconds=seconds),
            dict(model="slim, no fine-tuning", accuracy=slim_acc, params=result.after.params,
                 flops=result.after.flops, size=checkpoint_size(slim_prefix), seconds=prune_seconds),
            dict(model=f"slim + {args.finetune} epoch MXNet fine-tuning", accuracy=accuracy(mx, slim, x_test, y_test),
                 params=result.after.params, flops=result.after.flops, size=checkpoint_size(slim_prefix),
                 seconds=finetune_seconds)]
    for batch in (1, 64):
        before, after = latencies(mx, net, slim, batch, args.runs)
        rows[0][f"ms_b{batch}"] = before
        for row in rows[1:]:
            row[f"ms_b{batch}"] = after
    report = {"config": vars(args), "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                                 "mxnet": mx.__version__}, "rows": rows}
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "mxnet_slimming_quick.json" if args.quick else "mxnet_slimming.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print_table(report, args.markdown)
    print(f"wrote {path}")


def print_table(report, markdown=False):
    header = ["model", "test accuracy %", "params", "MFLOPs", "checkpoint KB", "MXNet ms (b1)", "MXNet ms (b64)",
              "time (s)"]
    rows = [[r["model"], f"{100 * r['accuracy']:.2f}", f"{r['params']:,}", f"{r['flops'] / 1e6:.1f}",
             f"{r['size'] / 1024:.0f}", f"{r['ms_b1']:.2f}", f"{r['ms_b64']:.1f}", f"{r['seconds']:.0f}"]
            for r in report["rows"]]
    print_rows("MXNet → spa-keras → MXNet on Fashion-MNIST (-50% FLOPs)", header, rows, markdown)


if __name__ == "__main__":
    main()
