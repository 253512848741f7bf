"""Where does a slim model's time go on onnxruntime? Per-node profiles of the original and pruned models.

    python benchmarks/ort_profile.py [--model MobileNetV2|ResNet50] [--flops 0.5] [--batch 1] [--runs 20]
                                     [--round-to auto[,1,8,16]] [--no-spin] [--nodes 8] [--keep DIR] [--out FILE]
    python benchmarks/ort_profile.py --table benchmarks/results/ort_profile.json [--markdown]

The model (a Keras application with random weights and random BatchNorm statistics, as in `latency.py`) is pruned
with `spa.prune(model, flops=..., round_to=..., criterion="l1")` (`round_to="auto"` with `runtime="onnxruntime"`),
original and slim models are written with `spa.convert` (tf2onnx, verified) and run in onnxruntime on the CPU with 2 intra-op threads
and every graph optimisation on (as users run them; ORT fuses Conv+Clip and residual Adds into its blocked NCHWc
convolutions), with `SessionOptions.enable_profiling`. All models run in turns (one run of each per turn, so load
changes hit all alike), 3 warm-up turns are dropped. Per kind of node the tables show the sum of
its nodes' kernel times (lower quartiles over the runs):

- kinds: convolutions split into the stem (3 input channels), depthwise, 1x1 expand (more outputs than inputs),
  1x1 project/reduce, other kxk, and the last convolution before the pooling; every other node by its op type
  (Transpose, ReorderInput/ReorderOutput of the NCHWc layout, GlobalAveragePool, Gemm, ...).
- FLOPs ratio (original / slim): from the convolutions' true weight shapes; "padded" from the weights ORT runs
  (its NCHWc kernels pad channels to whole blocks: 8 floats with AVX2, 16 with AVX-512).
- GFLOP/s: multiply-adds x 2 of the true shapes over the kernel time (how hard each kind works the CPU).
- bytes ratio: of the bytes the nodes read and write (activations as ORT holds them, and weights): a 1x1
  convolution keeping a fraction k of its input and output channels does k^2 of the work but moves about k of the
  bytes, so a memory-bound one cannot speed up by more than about 1/k.
- Amdahl bound: the speed-up if every convolution and Gemm sped up exactly by its own FLOPs ratio and every other
  node, plus the time outside kernels (model_run minus the kernels), stayed as in the original; bytes bound: if
  every node sped up by its own bytes ratio instead (models with the same graph only). Efficiency: bound / FLOPs
  ratio.

Times are per-node lower quartiles over the runs, summed (per kind, and for the whole model with the time outside
kernels): on a busy machine a run loses 10-20 ms in a node or two at random places (one thread of the pool
descheduled while the other waits for it), which a per-run sum keeps and a node's quartile drops. The lower
quartiles of the profiled `model_run` times and of unprofiled interleaved runs (as `latency.py` measures) are
shown too. Other work on the machine still disturbs all of these: per-kind ratios within a few percent are
noise. `--no-spin` makes the intra-op threads block instead of spinning between kernels
(session.intra_op.allow_spinning=0): on a 2-core machine busy with other work, spinning threads of the sessions
run in turns add tens of ms per run to every model alike, which pulls whole-model speed-ups towards 1 (at batch 16,
1.55-1.65x with spinning against 1.8-2.3x without, kernels ~2.0x either way). Results go to
benchmarks/results/ort_profile.json.
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tables import print_rows, report_or_measure, table_options  # noqa: E402

OUT = os.path.join(HERE, "results", "ort_profile.json")
THREADS, WARMUP = 2, 3
FLOP_KINDS = ("Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul")


# ---------------------------------------------------------------- models


def slim_models(model, flops, roundings):
    """{round_to: (slim model, FLOPs ratio by spa's count, channel multiple used)}."""
    import spa_keras as spa

    analysis = spa.analyze(model)
    out = {}
    for rounding in roundings:
        fixed = rounding != "auto"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = spa.prune(model, flops=flops, round_to=int(rounding) if fixed else "auto",
                               runtime=None if fixed else "onnxruntime", analysis=analysis, criterion="l1")
        out[rounding] = (result.model, result.before.flops / result.after.flops,
                         result.plan.target.channel_multiple or rounding)
    return out


def to_onnx(model, path):
    import spa_keras as spa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spa.convert(model, path)
    return path


# ---------------------------------------------------------------- graphs


def conv_weights(graph):
    """[(node, weight shape)] of the Conv nodes (any domain, FusedConv too), in graph (topological) order."""
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    return [(n, inits.get(n.input[1])) for n in graph.node if n.op_type in ("Conv", "FusedConv")]


def attribute(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def true_shapes(optimised, source):
    """{optimised conv name: the weight shape of the same convolution in the source ONNX model}: convolutions are
    matched in order, each to the first unmatched source convolution with the same kernel whose channel counts
    the optimised (possibly padded) weights cover by less than one block of 16."""
    src = [w for _, w in conv_weights(source)]
    used = [False] * len(src)
    out = {}
    for node, w in conv_weights(optimised):
        for i, s in enumerate(src):
            if not used[i] and s is not None and w is not None and s[2:] == w[2:] and \
                    0 <= w[0] - s[0] < 16 and 0 <= w[1] - s[1] < 16:
                used[i] = True
                out[node.name] = s
                break
    return out


def conv_kinds(optimised):
    """{conv name: kind}: stem, depthwise kxk, 1x1 expand, 1x1 project/reduce, kxk, last conv (before pooling)."""
    convs = conv_weights(optimised.graph)
    out = {}
    for i, (node, w) in enumerate(convs):
        group = attribute(node, "group", 1)
        cin = w[1] * group
        k = "x".join(str(d) for d in w[2:])
        if cin <= 4 and i == 0:
            kind = f"Conv stem {k}"
        elif group > 1:
            kind = f"Conv depthwise {k}"
        elif i == len(convs) - 1:
            kind = f"Conv last {k}"
        elif w[2:] == (1, 1):
            kind = "Conv 1x1 expand" if w[0] > cin else "Conv 1x1 project/reduce"
        else:
            kind = f"Conv {k}"
        out[node.name] = kind
    return out


def optimise(path, out_path):
    """Let onnxruntime optimise the model (all levels) and save the result; return it."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    opts.optimized_model_filepath = out_path
    ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return onnx.load(out_path)


def op_counts(optimised):
    return dict(collections.Counter((f"{n.domain.rsplit('.', 1)[-1]}:" if n.domain else "") + n.op_type
                                    for n in optimised.graph.node).most_common())


# ---------------------------------------------------------------- profiles


SPIN = True


def session(path, prefix, profile=True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not SPIN:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    opts.enable_profiling = profile
    opts.profile_file_prefix = prefix
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def node_bytes(event):
    """Bytes a node reads and writes: its inputs (activations and weights) and outputs, as ORT holds them (NCHWc
    tensors padded to whole blocks)."""
    args = event["args"]
    shapes = [next(iter(t.values())) for t in args.get("input_type_shape", []) + args.get("output_type_shape", [])]
    return 4 * sum(int(np.prod(s)) for s in shapes)


def node_macs(event, weight):
    """Multiply-adds of a Conv (from its output's spatial size and `weight`, a weight shape) or a Gemm/MatMul."""
    args = event["args"]
    outs = [next(iter(t.values())) for t in args.get("output_type_shape", [])]
    ins = [next(iter(t.values())) for t in args.get("input_type_shape", [])]
    op = args.get("op_name")
    if op in ("Conv", "FusedConv") and weight is not None and outs:
        o = outs[0]
        return o[0] * int(np.prod(o[2:4])) * int(np.prod(weight))
    if op in ("Gemm", "FusedGemm", "MatMul", "FusedMatMul") and len(ins) >= 2:
        a, b = ins[0], ins[1]
        return int(np.prod(a[:-1])) * a[-1] * (b[0] if attribute_trans_b(event) else b[-1])
    return 0


def attribute_trans_b(event):
    return event.get("_transB", False)


def runs_of(profile_path, warmup):
    """[(model_run µs, [(node name, op, µs, event)])] per run, the first `warmup` runs dropped."""
    with open(profile_path) as f:
        events = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    out, i = [], 0
    for start, end in runs:
        mine = []
        while i < len(nodes) and nodes[i]["ts"] < end:
            if nodes[i]["ts"] >= start:
                e = nodes[i]
                mine.append((e["name"][:-len("_kernel_time")], e["args"]["op_name"], e["dur"], e))
            i += 1
        out.append((end - start, mine))
    return out[warmup:]


def profile(paths, batch, runs, workdir):
    """{name: [(model_run µs, nodes)]} of each ONNX model in `paths` ({name: path}), run in turns; and the plain
    (unprofiled) lower quartiles in ms."""
    from spa_keras.latency.timing import interleaved

    rng = np.random.default_rng(0)
    sessions = {name: session(p, os.path.join(workdir, f"profile_{name}")) for name, p in paths.items()}
    feeds = {}
    for name, s in sessions.items():
        inp = s.get_inputs()[0]
        shape = [batch] + [d for d in inp.shape[1:]]
        feeds[name] = {inp.name: rng.uniform(0, 1, shape).astype("float32")}
    for _ in range(WARMUP + runs):
        for name, s in sessions.items():
            s.run(None, feeds[name])
    out = {name: runs_of(s.end_profiling(), WARMUP) for name, s in sessions.items()}
    plain = {name: session(p, "", profile=False) for name, p in paths.items()}
    times = interleaved(tuple((lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in plain.items()), runs,
                        warmup=WARMUP)
    q1 = {name: 1e3 * statistics.quantiles(t, n=4)[0] for name, t in zip(plain, times)}
    return out, q1


# ---------------------------------------------------------------- analysis


def lower_quartile(values):
    return statistics.quantiles(values, n=4)[0] if len(values) > 1 else values[0]


def per_kind(runs, kinds, weights, true):
    """Per node (by name): the lower quartile of its kernel times over the runs (ms) and its true and padded
    multiply-adds; per kind: the sum of its nodes' quartiles (ms), node count and multiply-adds. Per-node
    statistics, not statistics of per-run sums: on a busy machine a run loses 10-20 ms in a node or two (a thread
    of the pool preempted while the other waits for it) at random places, which a per-run sum keeps and a node's
    quartile drops. "(kernels)" sums every node's quartile, "(outside kernels)" is the lower quartile of model_run
    minus the kernels per run, "(total)" their sum; the raw model_run times are kept too."""
    per_node = collections.defaultdict(list)
    info = {}
    outside, model_run = [], []
    for total, nodes in runs:
        for name, op, us, event in nodes:
            per_node[name].append(us)
            if name not in info:
                info[name] = {"kind": kinds.get(name, op), "op": op,
                              "macs": node_macs(event, true.get(name, weights.get(name))),
                              "padded_macs": node_macs(event, weights.get(name)), "bytes": node_bytes(event)}
        outside.append(total - sum(us for _, _, us, _ in nodes))
        model_run.append(total)
    node_ms = {n: lower_quartile(v) / 1e3 for n, v in per_node.items()}
    kind_ms = collections.Counter()
    stats = collections.defaultdict(lambda: {"nodes": 0, "macs": 0, "padded_macs": 0, "bytes": 0})
    for name, d in info.items():
        kind_ms[d["kind"]] += node_ms[name]
        s = stats[d["kind"]]
        s["nodes"] += 1
        s["macs"] += d["macs"]
        s["padded_macs"] += d["padded_macs"]
        s["bytes"] += d["bytes"]
    kind_ms["(kernels)"] = sum(node_ms.values())
    kind_ms["(outside kernels)"] = lower_quartile(outside) / 1e3
    kind_ms["(total)"] = kind_ms["(kernels)"] + kind_ms["(outside kernels)"]
    raw = {"model_run_median_ms": statistics.median(model_run) / 1e3,
           "model_run_q1_ms": statistics.quantiles(model_run, n=4)[0] / 1e3}
    return dict(kind_ms), raw, dict(stats), node_ms, info


def gemm_transb(model):
    return {n.name: bool(attribute(n, "transB", 0)) for n in model.graph.node if n.op_type in ("Gemm", "FusedGemm")}


def mark_transb(runs, transb):
    for _, nodes in runs:
        for name, _, _, event in nodes:
            event["_transB"] = transb.get(name, False)


def analyse(base, slim):
    """One variant against the original: rows per kind, per-node comparisons and two Amdahl bounds: every node
    with multiply-adds sped up by its own FLOPs ratio, or every node by the ratio of the bytes it reads and writes
    (what a memory-bound kernel could gain), the rest, and the time outside kernels, as in the original."""
    kinds = sorted(set(base["ms"]) | set(slim["ms"]), key=lambda k: (k.startswith("("), -base["ms"].get(k, 0)))
    out = []
    for k in kinds:
        a, b = base["ms"].get(k, 0.0), slim["ms"].get(k, 0.0)
        sa, sb = base["stats"].get(k, {}), slim["stats"].get(k, {})
        row = {"kind": k, "nodes": [sa.get("nodes", 0), sb.get("nodes", 0)], "original_ms": a, "slim_ms": b,
               "time_ratio": a / b if b else None}
        if sa.get("bytes") and sb.get("bytes"):
            row["bytes_ratio"] = sa["bytes"] / sb["bytes"]
        if sa.get("macs") and sb.get("macs"):
            row["flops_ratio"] = sa["macs"] / sb["macs"]
            row["padded_flops_ratio"] = sa["padded_macs"] / sb["padded_macs"]
            row["efficiency"] = row["time_ratio"] / row["flops_ratio"] if row["time_ratio"] else None
            row["gflops"] = [2 * sa["macs"] / a / 1e6 if a else None, 2 * sb["macs"] / b / 1e6 if b else None]
        row["share_original"] = a / base["ms"]["(total)"]
        out.append(row)
    total = base["ms"]["(total)"]
    flop_a = [n for n in base["order"] if base["info"][n]["macs"]]
    flop_b = [n for n in slim["order"] if slim["info"][n]["macs"]]
    nodes, flops_bound, bytes_bound = [], None, None
    if len(flop_a) == len(flop_b):  # matched by position among the nodes with multiply-adds
        saved = 0.0
        for na, nb in zip(flop_a, flop_b):
            r = base["info"][na]["macs"] / slim["info"][nb]["macs"]
            ta, tb = base["node_ms"][na], slim["node_ms"][nb]
            saved += ta - ta / r
            nodes.append({"node": na, "kind": base["info"][na]["kind"], "original_ms": ta, "slim_ms": tb,
                          "time_ratio": ta / tb if tb else None, "flops_ratio": r,
                          "padded_flops_ratio": base["info"][na]["padded_macs"] / slim["info"][nb]["padded_macs"],
                          "bytes_ratio": base["info"][na]["bytes"] / slim["info"][nb]["bytes"],
                          "excess_ms": tb - ta / r})
        flops_bound = total / (total - saved)
    if len(base["order"]) == len(slim["order"]):  # the same graph with other channel counts
        saved = sum(base["node_ms"][na] * (1 - slim["info"][nb]["bytes"] / base["info"][na]["bytes"])
                    for na, nb in zip(base["order"], slim["order"]))
        bytes_bound = total / (total - saved)
    return out, nodes, flops_bound, bytes_bound


def measure(args):
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        return measure_in(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="ort_profile_") as workdir:
        return measure_in(args, workdir)


def measure_in(args, workdir):
    """Build, prune, convert, optimise and profile in `workdir`; write the report."""
    from latency import build

    model = build(args.model)
    slims = slim_models(model, args.flops, args.round_to)
    paths = {"original": to_onnx(model, os.path.join(workdir, "original.onnx"))}
    for r, (slim, _, _) in slims.items():
        paths[f"round_to={r}"] = to_onnx(slim, os.path.join(workdir, f"slim_{r}.onnx"))
    import onnx

    graphs, kinds, weights, true, transb = {}, {}, {}, {}, {}
    for name, path in paths.items():
        opt = optimise(path, os.path.join(workdir, f"optimised_{name}.onnx"))
        graphs[name] = op_counts(opt)
        kinds[name] = conv_kinds(opt)
        weights[name] = {n.name: w for n, w in conv_weights(opt.graph)}
        true[name] = true_shapes(opt.graph, onnx.load(path).graph)
        transb[name] = gemm_transb(opt)
    report = {"model": args.model, "flops": args.flops, "batch": args.batch, "runs": args.runs,
              "machine": f"{os.cpu_count()} cores, {THREADS} threads" + ("" if SPIN else ", no spinning"),
              "optimised_op_counts": graphs, "variants": []}
    runs, plain = profile(paths, args.batch, args.runs, workdir)
    measured = {}
    for name in paths:
        mark_transb(runs[name], transb[name])
        ms, raw, stats, node_ms, info = per_kind(runs[name], kinds[name], weights[name], true[name])
        order = [n for n, *_ in runs[name][0][1]]
        measured[name] = {"ms": ms, "raw": raw, "stats": stats, "node_ms": node_ms, "info": info, "order": order}
    base = measured["original"]
    for r, (_, ratio, multiple) in slims.items():
        name = f"round_to={r}"
        slim = measured[name]
        rows, nodes, bound, bytes_bound = analyse(base, slim)
        speedup = base["ms"]["(total)"] / slim["ms"]["(total)"]
        nodes.sort(key=lambda n: -n["excess_ms"])
        report["variants"].append({
            "round_to": r, "multiple": multiple, "flops_ratio": ratio,
            "total_ms": [base["ms"]["(total)"], slim["ms"]["(total)"]],
            "model_run_q1_ms": [base["raw"]["model_run_q1_ms"], slim["raw"]["model_run_q1_ms"]],
            "model_run_speedup": base["raw"]["model_run_q1_ms"] / slim["raw"]["model_run_q1_ms"],
            "speedup": speedup, "efficiency": speedup / ratio,
            "plain_q1_ms": [plain["original"], plain[name]], "plain_speedup": plain["original"] / plain[name],
            "amdahl_bound": bound, "amdahl_efficiency": bound / ratio if bound else None,
            "bytes_bound": bytes_bound, "bytes_efficiency": bytes_bound / ratio if bytes_bound else None,
            "kinds": rows, "worst_nodes": nodes[:args.nodes]})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    return report


# ---------------------------------------------------------------- tables


def fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def print_report(report, markdown=False):
    counts = report["optimised_op_counts"]
    header = ["op (optimised graph)"] + list(counts)
    ops = sorted({op for c in counts.values() for op in c})
    print_rows(f"{report['model']}: node counts of the graphs onnxruntime runs", header,
               [[op] + [str(c.get(op, 0)) for c in counts.values()] for op in ops], markdown)
    for v in report["variants"]:
        rounding = f"auto ({v['multiple']})" if v["round_to"] == "auto" else str(v["round_to"])
        title = (f"{report['model']} -{report['flops']:.0%} FLOPs, round_to={rounding}, batch {report['batch']}, "
                 f"onnxruntime ({report['machine']}), per-node lower quartiles of {report['runs']} runs in turns: "
                 f"{v['total_ms'][0]:.2f} -> {v['total_ms'][1]:.2f} ms, speed-up {v['speedup']:.2f}x of FLOPs ratio "
                 f"{v['flops_ratio']:.2f}x, efficiency {v['efficiency']:.2f} (lower quartiles of model_run "
                 f"{v['model_run_speedup']:.2f}x, unprofiled {v['plain_speedup']:.2f}x); Amdahl bound "
                 f"{fmt(v['amdahl_bound'])}x (efficiency {fmt(v['amdahl_efficiency'])}), bytes bound "
                 f"{fmt(v.get('bytes_bound'))}x (efficiency {fmt(v.get('bytes_efficiency'))})")
        header = ["kind", "nodes", "original ms", "slim ms", "share", "time ratio", "FLOPs ratio", "padded",
                  "bytes ratio", "efficiency", "GFLOP/s orig -> slim"]
        rows = []
        for r in v["kinds"]:
            g = r.get("gflops")
            rows.append([r["kind"], "{}/{}".format(*r["nodes"]), f"{r['original_ms']:.2f}", f"{r['slim_ms']:.2f}",
                         f"{r['share_original']:.0%}", fmt(r["time_ratio"]), fmt(r.get("flops_ratio")),
                         fmt(r.get("padded_flops_ratio")), fmt(r.get("bytes_ratio")), fmt(r.get("efficiency")),
                         f"{g[0]:.1f} -> {g[1]:.1f}" if g and None not in g else "-"])
        print_rows(title, header, rows, markdown)
        rows = [[n["node"][-48:], n["kind"], f"{n['original_ms']:.3f}", f"{n['slim_ms']:.3f}", fmt(n["time_ratio"]),
                 fmt(n["flops_ratio"]), fmt(n["padded_flops_ratio"]), fmt(n.get("bytes_ratio")),
                 f"{n['excess_ms']:.3f}"]
                for n in v["worst_nodes"]]
        if rows:
            print_rows("nodes furthest from their FLOPs ratio (excess = slim ms - original ms / FLOPs ratio)",
                       ["node", "kind", "original ms", "slim ms", "time ratio", "FLOPs ratio", "padded",
                        "bytes ratio", "excess ms"], rows, markdown)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MobileNetV2", choices=["MobileNetV2", "ResNet50", "EfficientNetB0"])
    parser.add_argument("--flops", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--round-to", type=lambda s: s.split(","), default=["auto"],
                        help="comma-separated: auto (runtime='onnxruntime') and/or channel multiples")
    parser.add_argument("--nodes", type=int, default=8, help="per variant, the nodes furthest from their FLOPs "
                        "ratio to list")
    parser.add_argument("--out", default=OUT, help="results JSON (default: benchmarks/results/ort_profile.json)")
    parser.add_argument("--keep", metavar="DIR", help="keep the ONNX models, ORT's optimised graphs and the raw "
                        "profiles in DIR")
    parser.add_argument("--no-spin", action="store_true", help="intra-op threads block instead of spinning "
                        "between work (session.intra_op.allow_spinning=0): models run in turns then do not spin "
                        "against each other")
    table_options(parser)
    args = parser.parse_args()
    global SPIN
    SPIN = not args.no_spin
    report = report_or_measure(args, measure)
    print_report(report, args.markdown)


if __name__ == "__main__":
    main()
