"""What the benchmark scripts share: mean ± std cells and a table printed with rich or as Markdown (the README's)."""

import json
import statistics
import sys

from rich.console import Console
from rich.table import Table


def summary(values, scale=100.0, digits=2):
    """'mean ± std' of `values` times `scale` (just the mean for one value, '-' for none)."""
    if not values:
        return "-"
    mean = scale * statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def print_rows(title, header, rows, markdown=False):
    """A table of string cells: a rich table on the terminal, or Markdown."""
    if markdown:
        print(f"\n{title}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    table = Table(title=title)
    for col in header:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def table_options(parser):
    """`--table FILE [--markdown]`: print the table of a results JSON instead of running."""
    parser.add_argument("--table", help="print the table of this JSON and exit")
    parser.add_argument("--markdown", action="store_true")


def report_or_measure(args, measure):
    """The results JSON `--table` names, or what `measure(args)` measures now."""
    if args.table:
        with open(args.table) as f:
            return json.load(f)
    return measure(args)


def fashion_mnist_or_exit():
    """Fashion-MNIST's ((x_train, y_train), (x_test, y_test)), or exit with the way to install it."""
    from spa_keras.ui.demo import FASHION_DIR, fashion_mnist

    data = fashion_mnist()
    if data is None:
        sys.exit(f"Fashion-MNIST is not installed in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    return data
