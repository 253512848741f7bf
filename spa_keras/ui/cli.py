"""The `spa` command line.

    spa convert model.h5 model.onnx
    spa convert model.onnx model.tflite --precision float16
    spa convert resnet18_v1 resnet18.onnx --epoch 0 --input-shape 1,3,224,224
    spa prune model.keras -o slim.keras --flops 0.5 --criterion obspa
    spa prune model.onnx -o slim.onnx --flops 0.5 --calibration images/ --preprocess torch
    spa demo

Errors are one line on stderr and a non-zero exit; `--debug` shows library output and tracebacks.
"""

import contextlib
import os
import signal
import sys
import threading

import click

# TensorFlow's C++ logging must be set before it is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from spa_keras.common.console import console, err_console, print_check  # noqa: E402
from spa_keras.common.errors import SpaError, first_line  # noqa: E402
from spa_keras.importance.obspa import CALIBRATION_DAMPING, CALIBRATION_SAMPLES, SYNTHETIC_DAMPING  # noqa: E402
from spa_keras.obspa.hessians import SAMPLES, STEPS  # noqa: E402
from spa_keras.planning.runtimes import RUNTIMES, runtime_of_path  # noqa: E402


class _Group(click.Group):
    """Turns every failure into one line on stderr (a traceback only with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option: one line, before any work
            if os.environ.get("SPA_DEBUG"):
                raise
            command = exc.ctx.command_path if exc.ctx is not None else "spa"
            err_console.print(f"spa: error: {exc.format_message()} (see {command} --help)", markup=False,
                              soft_wrap=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except SpaError as exc:
            if os.environ.get("SPA_DEBUG"):
                raise
            err_console.print(f"spa: error: {exc}", markup=False, soft_wrap=True)
            ctx.exit(2)
        except OSError as exc:  # the machine said no (permissions, a full disk, a vanished file): not our bug
            if os.environ.get("SPA_DEBUG") or exc.filename is None:
                raise
            err_console.print(f"spa: error: {exc.filename}: {exc.strerror or first_line(exc)}", markup=False,
                              soft_wrap=True)
            ctx.exit(2)
        except Exception as exc:  # a bug or an unexpected library failure: still one line
            if os.environ.get("SPA_DEBUG"):
                raise
            err_console.print(f"spa: internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for the "
                              "traceback and report it)", markup=False, soft_wrap=True)
            ctx.exit(1)


def _data_free_criteria():
    from spa_keras.importance import CRITERIA

    return [name for name, cls in sorted(CRITERIA.items()) if not cls.needs_data]


_DATA_FREE_CRITERIA = _data_free_criteria()


def _obspa_defaults():
    """OBSPA's own defaults, for --help."""
    import inspect

    from spa_keras.importance import OBSPA

    return {name: p.default for name, p in inspect.signature(OBSPA.__init__).parameters.items()}


_OBSPA = _obspa_defaults()
# `spa prune`'s OBSPA options: {option: OBSPA's argument}
OBSPA_OPTIONS = {"--samples": "samples", "--hessian": "hessian", "--damping": "damping",
                 "--recalibrate": "recalibrate", "--obspa-steps": "steps", "--obspa-budget": "budget"}


def _fraction(ctx, param, value):
    """A fraction removed, in [0, 1): checked while parsing, before TensorFlow loads."""
    if value is not None and not 0 <= value < 1:
        raise click.BadParameter(f"{param.name}={value:g}: a fraction removed, in [0, 1)")
    return value


def _round_to(ctx, param, value):
    """'auto' or a whole number of at least 1."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(f"{value!r}: 'auto' or a whole number of at least 1")
    return number


def _ignore(ctx, param, value):
    """Regular expressions, checked while parsing."""
    from spa_keras.common.errors import InputError
    from spa_keras.planning.selection import compile_ignore

    try:
        compile_ignore(value)
    except InputError as exc:
        raise click.BadParameter(str(exc).removeprefix("ignore ")) from exc
    return value


def _preprocess(ctx, param, value):
    """`--preprocess`: parsed while parsing (a `Preprocess`), so a typo fails before any work."""
    from spa_keras.common.errors import InputError
    from spa_keras.compute.calibration import Preprocess

    try:
        return None if value is None else Preprocess.parse(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from exc


def _import_modules(modules):
    """`--import`: modules (or .py files) that register custom Keras classes, imported before any model loads."""
    import importlib
    import importlib.util

    from spa_keras.common.errors import InputError

    sys.path.insert(0, os.getcwd())  # as `python -m` would: the user's own modules are found
    for module in modules:
        try:
            if module.endswith(".py"):
                spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(module))[0], module)
                if spec is None or not os.path.isfile(module):
                    raise FileNotFoundError(f"no such file: {module}")
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            else:
                importlib.import_module(module)
        except Exception as exc:
            raise InputError(f"--import {module}: cannot import it ({type(exc).__name__}: {first_line(exc)})") from exc


def _plot_path(ctx, param, value):
    """A picture file in an existing directory, checked before any work."""
    from spa_keras.common.errors import InputError
    from spa_keras.common.files import check_picture_path

    try:
        return None if value is None else check_picture_path(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from exc


# the models `spa analyze` and `spa prune` read, and what `spa prune` writes from each kind of slim model
PRUNE_INPUTS = ("keras", "h5", "onnx", "savedmodel", "mxnet")
PRUNE_OUTPUTS = {"keras": ("keras", "h5", "onnx", "tflite", "savedmodel"),
                 "onnx": ("onnx", "tflite", "savedmodel", "keras", "h5"),
                 "mxnet": ("mxnet", "onnx", "tflite", "savedmodel", "keras", "h5")}
SLIM_KINDS = {"keras": "keras", "h5": "keras", "onnx": "onnx", "savedmodel": "onnx", "mxnet": "mxnet"}


def _check_prune_paths(model, output, plan_in, plan_out, via, precision):
    """Every path check `spa prune` can make before loading anything; returns the output's kind."""
    from spa_keras.common import files
    from spa_keras.common.errors import InputError

    kind = files.accepted_kind(model, PRUNE_INPUTS, "spa prune")
    result_kind = "onnx" if via == "onnx" else SLIM_KINDS[kind]
    out_kind = files.model_kind(output, for_output=True, source_kind=kind)
    if out_kind not in PRUNE_OUTPUTS[result_kind]:
        source = "a Keras model pruned via ONNX" if kind in ("keras", "h5") else files.DESCRIPTIONS[kind]
        way = " (MXNet loads .onnx with mx.onnx.import_model)" if out_kind == "mxnet" else ""
        raise InputError(f"{output}: spa prune writes {files.describe(PRUNE_OUTPUTS[result_kind])} from "
                         f"{source}{way}")
    if precision != "float32" and out_kind != "tflite":
        raise InputError(f"--precision {precision} applies to .tflite outputs only, not to {output}")
    files.check_output_path(output)
    files.refuse_same(output, ("the input model", model), ("the plan read (--plan)", plan_in))
    if plan_out:
        files.check_output_path(plan_out)
        files.refuse_same(plan_out, ("the input model", model), ("the output model (-o)", output),
                          ("the plan read (--plan)", plan_in))
    return out_kind


def _check_prune_targets(ratio, flops, params, latency, plan_in, steps, criterion):
    """The target rules of `spa.prune` (one target or a plan; --latency alone; --steps towards a target, with a
    criterion that rescores), checked before TensorFlow loads and said in the CLI's spelling: `prune()` itself
    speaks Python (`ratio=`), which a command-line user never typed."""
    from spa_keras.common.errors import InputError
    from spa_keras.importance import CRITERIA

    given = [f"--{name}" for name, value in (("ratio", ratio), ("flops", flops), ("params", params),
                                              ("latency", latency)) if value is not None]
    if plan_in is not None:
        if given:
            raise InputError(f"give either --plan or a target (--ratio, --flops, --params or --latency), not both "
                             f"(got --plan and {', '.join(given)})")
        if steps > 1:
            raise InputError(f"--steps {steps} prunes towards a target; a plan (--plan) is applied in one step: "
                             "leave out --steps")
        return
    if not given:
        raise InputError("give a target: --ratio, --flops, --params or --latency (fractions removed), or a plan "
                         "(--plan PLAN.json)")
    if latency is not None and (len(given) > 1 or steps > 1):
        raise InputError("--latency is a target of its own: give it without --ratio, --flops, --params and --steps")
    if len(given) > 1:
        raise InputError(f"give exactly one target: --ratio, --flops, --params or --latency (got {', '.join(given)})")
    if steps > 1 and criterion is not None and hasattr(CRITERIA.get(criterion.lower()), "updates"):
        raise InputError(f"--steps {steps} rescores between steps, but --criterion {criterion} rewrites kept weights "
                         "and prunes in one step: leave out --steps")


def _check_obspa_options(criterion, plan_in, calibration, preprocess, obspa):
    """The criterion `spa prune` runs (None: the default), and OBSPA's options checked against it before
    TensorFlow loads: they apply to --criterion obspa (which they imply when --criterion is not given) and to
    planning, not to a replayed plan. `obspa`: {option: value or None}."""
    from spa_keras.common.errors import InputError
    from spa_keras.compute.calibration import ARRAY_EXTENSIONS

    given = [name for name, value in (("--calibration", calibration), ("--preprocess", preprocess), *obspa.items())
             if value is not None]
    if plan_in is not None and given:
        raise InputError(f"--plan replays a plan's channels and weights; {', '.join(given)} appl"
                         f"{'ies' if len(given) == 1 else 'y'} to planning with OBSPA: leave "
                         f"{'it' if len(given) == 1 else 'them'} out")
    if criterion is None:
        criterion = "obspa" if given else None  # None: the default, resolved on the analysed model by prune()
    elif criterion.lower() != "obspa" and given:
        if calibration is not None:
            raise InputError(f"--calibration gives OBSPA's Hessians their inputs; --criterion {criterion} reads no "
                             "data (the data-driven criteria take labels and a loss: spa.prune(..., data=, loss=) in "
                             "Python): use --criterion obspa, or leave --criterion out")
        raise InputError(f"{', '.join(given)} set{'s' * (len(given) == 1)} OBSPA's options; --criterion {criterion} "
                         f"takes none: use --criterion obspa, or leave {'it' if len(given) == 1 else 'them'} out")
    if preprocess is not None and calibration is None:
        raise InputError("--preprocess says how the images of a --calibration folder become model inputs: give "
                         "--calibration FOLDER")
    if calibration is not None:
        if not os.path.isdir(calibration) and not calibration.lower().endswith(ARRAY_EXTENSIONS):
            raise InputError(f"--calibration {calibration}: an .npy or .npz of model inputs, or a folder of images")
        if preprocess is not None and not os.path.isdir(calibration):
            raise InputError(f"--calibration {calibration} holds model inputs as they are; --preprocess applies to a "
                             "folder of images")
        if obspa["--hessian"] is not None:
            raise InputError(f"--hessian {obspa['--hessian']} makes up the Hessians' inputs; --calibration gives "
                             "real ones: give one of them")
    synthetic = calibration is None and obspa["--hessian"] in (None, "batchnorm")
    tuning = [name for name in ("--obspa-steps", "--obspa-budget") if obspa[name] is not None]
    if tuning and not synthetic:
        made = f"--calibration {calibration}" if calibration is not None else f"--hessian {obspa['--hessian']}"
        raise InputError(f"{' and '.join(tuning)} tune{'s' * (len(tuning) == 1)} the synthetic inputs of --hessian "
                         f"batchnorm; with {made} there are none: leave {'it' if len(tuning) == 1 else 'them'} out")
    return None if criterion is None else criterion.lower()


def _chosen_criterion(criterion, calibration, preprocess, obspa, load):
    """What `spa prune` hands to `prune()`: the criterion's name, or an OBSPA with the options given (and the
    --calibration inputs, read at the shapes the model was analysed at: `load()` gives that analysis)."""
    from spa_keras.common.errors import InputError
    from spa_keras.compute.calibration import load_calibration
    from spa_keras.importance import OBSPA

    options = {OBSPA_OPTIONS[name]: value for name, value in obspa.items() if value is not None}
    if criterion is None or criterion != "obspa" or (not options and calibration is None):
        return criterion, None
    if options.get("recalibrate") == "none":
        options["recalibrate"] = None
    analysis = None
    if calibration is not None:
        analysis = load()
        source = analysis.source
        try:
            options["calibration"] = load_calibration(
                calibration, analysis.input_shapes, preprocess, limit=options.get("samples") or CALIBRATION_SAMPLES,
                channels_last=source.kind not in ("onnx", "mxnet"),
                say=lambda line: console.print(f"calibration {line}", soft_wrap=True, markup=False))
        except InputError as exc:
            free = any(d is None for spec in source.graph_specs for d in tuple(spec.shape)[1:])
            hint = (" (the model's free dimensions were filled for the analysis: --input-shape sets them)"
                    if free and "takes (N" in str(exc) else "")
            raise InputError(f"--calibration {exc}{hint}") from exc
    return OBSPA(**options), analysis


def _import_frameworks():
    """Import TensorFlow and Keras with their C++ start-up logging silenced (it bypasses TF_CPP_MIN_LOG_LEVEL)."""
    from spa_keras.common.console import quiet

    with quiet():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


def _cli_spelling(text):
    """OBSPA's notes name its Python arguments (calibration=, budget=): said as the options of `spa prune`."""
    import re

    if not text.startswith("OBSPA"):
        return text
    text = re.sub(r"\bcalibration=", "--calibration", text)
    text = re.sub(r"\bbudget=(?=\S)", "--obspa-budget ", text)
    return re.sub(r"\bbudget=", "--obspa-budget", text)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Our warnings (a target that could not be met, a default input size) as one line on stderr; other
    libraries' warnings only with --debug."""
    if issubclass(category, UserWarning) and "spa_keras" in str(filename):
        err_console.print(f"spa: note: {_cli_spelling(str(message))}", markup=False, soft_wrap=True)
    elif os.environ.get("SPA_DEBUG"):
        err_console.print(f"{category.__name__}: {message} ({filename}:{lineno})", markup=False, soft_wrap=True)


def _terminated(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so the temporary files of a write in progress are removed."""
    from spa_keras.common import files

    files.note_signal(signum)
    raise SystemExit(128 + signum)


def _interrupted(signum, frame):
    """Ctrl-C raises KeyboardInterrupt as usual, and is noted, so a write it hit is not committed even when a
    library swallowed the exception."""
    from spa_keras.common import files

    files.note_signal(signum)
    raise KeyboardInterrupt


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show library output and full tracebacks.")
@click.option("--import", "modules", multiple=True, metavar="MODULE",
              help="Import a module (or .py file) first: the one that registers your custom Keras layers.")
@click.version_option(package_name="spa-keras", prog_name="spa")
def cli(debug, modules):
    """spa-keras: structured pruning that removes channels for real (Keras 3, ONNX, MXNet, TFLite)."""
    import warnings

    warnings.showwarning = _show_warning
    if threading.current_thread() is threading.main_thread():
        from spa_keras.common import files

        files.forget_signals()  # a command run in-process after an earlier interrupted one starts clean
        signal.signal(signal.SIGTERM, _terminated)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupted)
    if debug:
        os.environ["SPA_DEBUG"] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    if modules:
        _import_modules(modules)


_EPOCH = click.option("--epoch", type=click.IntRange(min=0), default=0, show_default=True,
                       help="MXNet checkpoint epoch (PREFIX-EPOCH.params).")
_SIGNATURE = click.option("--signature", help="The SavedModel signature to read [default: serving_default].")


@cli.command()
@click.argument("source")
@click.argument("output")
@_EPOCH
@click.option("--input-shape", help="Fill free input dimensions: 1,3,224,224 (or NAME:1,8;NAME2:1,8).")
@click.option("--precision", type=click.Choice(["float32", "float16", "int8"]), default="float32",
              show_default=True, help="TFLite weights: float32, float16 or dynamic-range int8.")
@click.option("--tolerance", type=float, help="Largest accepted relative difference (default by precision).")
@_SIGNATURE
def convert(source, output, epoch, input_shape, precision, tolerance, signature):
    """Convert SOURCE to OUTPUT, verified against the source framework before it is written.

    SOURCE: .keras, .h5, .onnx, a SavedModel directory or an MXNet prefix (PREFIX-symbol.json + PREFIX-0000.params).
    OUTPUT: .onnx, .tflite, .keras, .h5, or a path without extension for a SavedModel directory (from MXNet: an
    MXNet prefix; end it with / for a SavedModel).
    """
    from spa_keras.common import files
    from spa_keras.pipeline.convert import convert as run_convert

    kind = files.model_kind(source)
    files.model_kind(output, for_output=True, source_kind=kind)
    files.check_output_path(output)
    files.refuse_same(output, ("the input model", source))
    _import_frameworks()
    with console.status("converting") as status:
        report = run_convert(source, output, epoch=epoch, input_shape=input_shape, precision=precision,
                             tolerance=tolerance, progress=lambda m: status.update(m), signature=signature)
    for check in report.checks:
        print_check(check)
    console.print(f"wrote {output}", soft_wrap=True)


@cli.command()
@click.argument("model")
@click.option("--input-shape", help="Fill free input dimensions (needed for FLOP counts): 1,3,224,224.")
@click.option("--limit", type=click.IntRange(min=1), help="Show only the first N groups.")
@click.option("--plot", callback=_plot_path, help="Also draw channels per group and FLOPs per layer (.png/.svg/.pdf).")
@_EPOCH
@_SIGNATURE
def analyze(model, input_shape, limit, plot, epoch, signature):
    """Show MODEL's channel groups, what blocks them, and their share of parameters and FLOPs.

    MODEL: .keras, .h5, .onnx, a SavedModel directory or an MXNet prefix (with --input-shape)."""
    from spa_keras.common import files
    from spa_keras.pipeline.prune import analyze as run_analyze

    files.accepted_kind(model, PRUNE_INPUTS, "spa analyze")
    _import_frameworks()
    with console.status("analysing"):
        analysis = run_analyze(model, input_shape, epoch=epoch, signature=signature)
    analysis.print(limit)
    if plot:
        from spa_keras.ui.plots import plot_widths

        console.print(f"wrote {plot_widths(analysis, plot)}", soft_wrap=True)


@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True,
              help="Where to write the pruned model: .keras/.h5, .onnx, .tflite, a SavedModel directory (no "
              "extension) or, from MXNet, an MXNet prefix (no extension or PREFIX-symbol.json; end with / for a "
              "SavedModel).")
@click.option("--ratio", type=float, callback=_fraction, help="Fraction of prunable channels to remove.")
@click.option("--flops", type=float, callback=_fraction, help="Fraction of FLOPs to remove.")
@click.option("--params", type=float, callback=_fraction, help="Fraction of parameters to remove.")
@click.option("--latency", type=float, callback=_fraction, help="Fraction of the latency measured on --runtime "
              "(this machine) to remove: planned on a per-layer latency table (measured once per machine and runtime, "
              "cached in ~/.cache/spa-keras), then checked by converting and timing the slim model, at the batch "
              "size of --input-shape (default 1).")
@click.option("--plan", "plan_in", type=click.Path(exists=True, dir_okay=False), help="Apply a saved plan (JSON).")
@click.option("--plan-out", type=click.Path(dir_okay=False), help="Write the plan used as JSON.")
@click.option("--criterion", type=click.Choice(_DATA_FREE_CRITERIA, case_sensitive=False),
              help="Importance criterion [default: obspa, data-free, which refits the kept weights so that a model "
              "pruned without fine-tuning stays usable (seconds to a minute); l1 with --steps, inputs that are not "
              "floating point, or a Keras model without BatchNorm]. l1 ranks by weight magnitude in a second, for models you fine-tune. The data-driven "
              "ones (taylor, snip, grasp, crop, obd) need training data: use spa.prune(..., criterion=, data=, "
              "loss=) in Python.")
@click.option("--calibration", type=click.Path(exists=True),
              help="OBSPA: real model inputs for its Hessians instead of synthetic ones: an .npy (one array, batch "
              "first), an .npz (one array per input name; a labels key is left out) or a folder of images "
              "(see --preprocess). At most --samples are read.")
@click.option("--preprocess", callback=_preprocess, metavar="SPEC",
              help="How the images of a --calibration folder become model inputs: (pixel * scale - mean) / std per "
              "channel, e.g. 'scale=1/255,mean=0.485,0.456,0.406,std=0.229,0.224,0.225'; layout=nhwc|nchw (default: "
              "from the model's input shape), color=rgb|bgr|gray, resize=stretch|crop; or a preset first (torch, tf, "
              "caffe: as keras.applications' preprocess_input) with keys that change it ('caffe,layout=nchw'). "
              "[default: scale=1/255, pixels in [0, 1]]")
@click.option("--samples", type=click.IntRange(min=1),
              help=f"OBSPA: how many inputs the Hessians are measured on [default: {CALIBRATION_SAMPLES} of "
              f"--calibration; {SAMPLES} synthetic ones, fewer for very large models].")
@click.option("--hessian", type=click.Choice(["batchnorm", "gaussian", "identity"]),
              help="OBSPA without --calibration: inputs that reproduce the BatchNorm statistics (batchnorm, Keras "
              "models), Gaussian noise, or none (identity: no reconstruction) [default: batchnorm].")
@click.option("--damping", type=click.FloatRange(min=0),
              help=f"OBSPA: λ in H + λ·mean(diag H)·I [default: {CALIBRATION_DAMPING:g} with --calibration, "
                   f"{SYNTHETIC_DAMPING:g} without].")
@click.option("--recalibrate", type=click.Choice(["reestimate", "correct", "none"]),
              help="OBSPA: BatchNorm statistics after the refit: re-estimated on the inputs, corrected for what "
              f"pruning changed, or left alone [default: {_OBSPA['recalibrate']}].")
@click.option("--obspa-steps", type=click.IntRange(min=1),
              help="OBSPA --hessian batchnorm: optimisation steps of the synthetic inputs "
              f"[default: {STEPS}, fewer for very large models].")
@click.option("--obspa-budget", type=click.FloatRange(min=0, min_open=True),
              help="OBSPA --hessian batchnorm: seconds the synthetic inputs may take: fewer steps when they run "
              "out, so the result depends on the machine's load [default: no limit, the same result everywhere].")
@click.option("--local", "local_ranking", is_flag=True, help="Rank channels within each group (uniform pruning).")
@click.option("--round-to", callback=_round_to, default="auto", show_default=True,
              help="Keep pruned channel counts multiples of N, or 'auto': counts the runtime runs fast on this CPU "
              "(multiples of 16 on x86, 8 on ARM; smaller when the target needs it).")
@click.option("--runtime", type=click.Choice(RUNTIMES), help="The runtime --round-to auto and --latency aim at "
              "[default: from OUTPUT: .tflite tflite, .onnx onnxruntime, Keras and SavedModel tensorflow].")
@click.option("--ignore", multiple=True, callback=_ignore, help="Leave groups touching these node/parameter names (regex) alone.")
@click.option("--max-per-group", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="Largest fraction of one group's channels that may go.")
@click.option("--input-shape", help="Fill free input dimensions: 1,3,224,224.")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Prune iteratively: N rounds of score, prune, rescore on the slimmer model.")
@click.option("--via", type=click.Choice(["onnx"]), help="Prune a Keras model through its tf2onnx export.")
@click.option("--plot", callback=_plot_path, help="Also draw channels per group and FLOPs per layer, before and "
              "after (.png/.svg/.pdf).")
@click.option("--precision", type=click.Choice(["float32", "float16", "int8"]), default="float32",
              show_default=True, help="TFLite weights: float32, float16 or dynamic-range int8.")
@_EPOCH
@_SIGNATURE
def prune(model, output, ratio, flops, params, latency, plan_in, plan_out, criterion, calibration, preprocess,
          samples, hessian, damping, recalibrate, obspa_steps, obspa_budget, local_ranking, round_to, runtime, ignore,
          max_per_group, input_shape, steps, via, plot, precision, epoch, signature):
    """Prune MODEL and write the slim model to OUTPUT, verified before it is written.

    MODEL: .keras, .h5, .onnx, a SavedModel directory (through tf2onnx) or an MXNet prefix (PREFIX-symbol.json +
    PREFIX-EPOCH.params, with --input-shape). MXNet models come back as MXNet checkpoints (slimmed natively) or go
    on to any other output."""
    from spa_keras.pipeline.convert import convert as run_convert
    from spa_keras.pipeline.prune import analyze as run_analyze
    from spa_keras.pipeline.prune import prune as run_prune

    obspa = {"--samples": samples, "--hessian": hessian, "--damping": damping, "--recalibrate": recalibrate,
             "--obspa-steps": obspa_steps, "--obspa-budget": obspa_budget}
    criterion = _check_obspa_options(criterion, plan_in, calibration, preprocess, obspa)
    _check_prune_targets(ratio, flops, params, latency, plan_in, steps, criterion)
    out_kind = _check_prune_paths(model, output, plan_in, plan_out, via, precision)
    _import_frameworks()
    with console.status("pruning"):
        chosen, analysis = _chosen_criterion(criterion, calibration, preprocess, obspa, lambda: run_analyze(
            model, input_shape, via=via, epoch=epoch, signature=signature))
        result = run_prune(model, ratio=ratio, flops=flops, params=params, latency=latency, plan=plan_in,
                           criterion=chosen, analysis=analysis,
                           global_ranking=not local_ranking, round_to=round_to,
                           runtime=runtime or (None if out_kind == "mxnet" else runtime_of_path(output)),
                           ignore=ignore, max_per_group=max_per_group, input_shape=input_shape, steps=steps, via=via,
                           epoch=epoch, signature=signature)
        shapes = _analysed_shapes(result.analysis)
        check = _verify_pruned(result, shapes)
    console.print(result.report)
    console.print(_criterion_line(result.plan, plan_in, chosen is None), soft_wrap=True, markup=False)
    console.print(f"[green]checked[/green] {check}", soft_wrap=True)
    # the plan waits beside --plan-out until the model is written: a failure leaves neither
    with result.plan.staged(plan_out) if plan_out else contextlib.nullcontext():
        with console.status("writing") as status:
            report = run_convert(result.model, output, input_shape=shapes, precision=precision,
                                 progress=status.update)
    for verification in report.checks:
        print_check(verification)
    console.print(f"wrote {output}", soft_wrap=True)
    if plan_out:
        console.print(f"wrote plan {plan_out}", soft_wrap=True)
    if plot:
        from spa_keras.ui.plots import plot_widths

        console.print(f"wrote {plot_widths(result.analysis, plot, result.plan)}", soft_wrap=True)


def _criterion_line(plan, plan_in, default=False):
    """Which criterion chose the channels (with its options when it had any; `default`: none was given), and
    whether kept weights were refit."""
    target = plan.target
    name = target.criterion or "unknown"
    if default and not plan_in:
        name += (" (the default: for a model used without fine-tuning; --criterion l1 ranks by weight magnitude, "
                 "faster)" if name == "obspa" else " (the default where data-free OBSPA does not apply: --steps, "
                 "inputs that are not floating point, a Keras model without BatchNorm)")
    line = f"criterion {name}" + (f": {target.criterion_options}" if target.criterion_options else "")
    if target.reconstructed:
        line += "; kept weights refit"
    return line + (f" (the plan {plan_in})" if plan_in else "")


def _analysed_shapes(analysis):
    """The input shapes the model was analysed at, for the checks that follow (one input: for whatever name the
    converted model gives it)."""
    shapes = dict(analysis.input_shapes)
    return {None: next(iter(shapes.values()))} if len(shapes) == 1 else shapes


def _verify_pruned(result, shapes):
    """The slim model runs with the original's output shapes (values change by design)."""
    from spa_keras import formats
    from spa_keras.common.errors import VerificationError
    from spa_keras.common.verify import compare

    original = formats.load(result.analysis.source.analysed_model, input_shapes=shapes)
    slim = formats.load(result.model, input_shapes=shapes)
    feeds, ref = original.reference_run(shapes)
    out = slim.run(feeds)
    if [v.shape for v in ref.values()] != [v.shape for v in out.values()]:
        raise VerificationError("the pruned model's output shapes differ from the original's; nothing was written")
    change = compare(ref, out, source="original", target="pruned", tolerance=float("inf")).rel
    return (f"the pruned model runs ({slim.framework}); output shapes unchanged "
            f"{[tuple(v.shape[1:]) for v in out.values()]}; outputs moved by {change:.2e} relative to their scale "
            "(pruning changes them; fine-tune to recover)")


@cli.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to write the demo's files "
              "(default: a temporary directory that is removed afterwards).")
def demo(workdir):
    """The built-in example: a small ResNet trained on Fashion-MNIST, counted, converted and verified."""
    from spa_keras.ui.demo import run_demo

    _import_frameworks()
    run_demo(workdir)


def main(argv=None):
    return cli.main(args=argv, prog_name="spa")


if __name__ == "__main__":
    sys.exit(main())
