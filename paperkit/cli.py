"""`paperkit` command line: data, profile, bench, predict, evaluate, results, reproduce; each verb is a thin call."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _parse_kv(items: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"--param expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


DETECTORS = ["auto", "cnn", "fast", "haar"]
PROFILE_NAMES = ["smoke", "default", "paper"]


def build_parser() -> argparse.ArgumentParser:
    """The whole `paperkit` argument grammar, one helper per group of verbs."""
    ap = argparse.ArgumentParser(prog="paperkit", description="Reproduce fast face anti-spoofing works.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    _add_bench(sub)
    _add_scoring(sub)
    _add_runs(sub)
    return ap


def _add_data(sub: argparse._SubParsersAction) -> None:
    """`data summary`, `data synth`, `profile table4`."""
    d = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("summary", help="count images, labels and problems of a CelebA-Spoof tree")
    s.add_argument("--root", required=True)
    s.add_argument("--json", action="store_true")
    g = d.add_parser("synth", help="write the embedded synthetic dataset in CelebA-Spoof layout")
    g.add_argument("--out", required=True)
    g.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--faces", default=None, help="folder of your own bona fide face photos")

    p = sub.add_parser("profile", help="complexity tables").add_subparsers(dest="profile_cmd", required=True)
    t4 = p.add_parser("table4", help="params and MAdds of every PTA configuration (seed 000, Table 4)")
    t4.add_argument("--json", action="store_true")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    """`bench latency|data|detect|bn|synth|index|train`: benchmarks that print measured ratios."""
    b = sub.add_parser("bench", help="benchmarks that print measured ratios").add_subparsers(
        dest="bench_cmd", required=True)
    bl = b.add_parser("latency", help="batch-1 latency of every model, side by side in one run")
    bl.add_argument("--profile", default="default")
    bl.add_argument("--run-dir", default="results", help="where trained ONNX models are looked up")
    bl.add_argument("--json", action="store_true")
    bd = b.add_parser("data", help="decode + crop + augment throughput")
    bd.add_argument("--root", default="", help="dataset root (default: the embedded dataset)")
    bd.add_argument("--size", type=int, default=128)
    bf = b.add_parser("detect", help="faces found and ms per image of each face detector on a folder")
    bf.add_argument("folder", nargs="?", default=None, help="folder of photos (searched at any depth)")
    bf.add_argument("--detectors", default="haar,fast,cnn,auto", help="comma-separated, in print order")
    bf.add_argument("--root", default=None, help="dataset root for --check-boxes (default: the embedded dataset)")
    bf.add_argument("--check-boxes", action="store_true",
                    help="test ACER of --model on crops from stored _BB.txt boxes vs detector boxes")
    bf.add_argument("--model", default=None, help="ONNX model for --check-boxes (default: the packaged one)")
    bf.add_argument("--limit", type=int, default=None, help="at most this many test images for --check-boxes")
    bf.add_argument("--json", action="store_true")
    bb = b.add_parser("bn", help="cost of per-configuration BatchNorm recalibration vs one evaluation pass")
    bb.add_argument("--profile", default="default")
    bb.add_argument("--rounds", type=int, default=3)
    bb.add_argument("--json", action="store_true")
    bs = b.add_parser("synth", help="synthetic dataset generation throughput")
    bs.add_argument("--n", type=int, default=200)
    _add_cache_benches(b)


def _add_scoring(sub: argparse._SubParsersAction) -> None:
    """`predict` and `evaluate`: a model on user photos."""
    pr = sub.add_parser("predict", help="score faces in images or videos with an ONNX model")
    pr.add_argument("paths", nargs="*", help="images, videos or folders (searched at any depth)")
    pr.add_argument("--model", default=None, help="ONNX model (default: the one shipped in the package)")
    pr.add_argument("--threshold", type=float, default=0.5)
    pr.add_argument("--detector", default="auto", choices=DETECTORS,
                    help="auto: dlib HOG, then dlib's CNN when HOG is not sure; fast: HOG only; cnn: CNN only")
    pr.add_argument("--json", action="store_true", help="print the report as JSON")
    pr.add_argument("--csv", default=None, metavar="FILE", help="also write one row per input file to FILE")
    pr.add_argument("--model-info", action="store_true", help="print the model card and exit")

    ev = sub.add_parser("evaluate", help="AUC, APCER, BPCER, ACER of a model on a folder of real photos")
    ev.add_argument("root", help="ROOT/live/** and ROOT/spoof/**, or a CelebA-Spoof tree (its test split)")
    ev.add_argument("--model", action="append", default=None,
                    help="ONNX model (default: the one shipped in the package); repeat it (e.g. one per training "
                         "seed) for each model's figures and their mean AUC with a joint interval")
    ev.add_argument("--report", default=None, metavar="DIR", help="write scores.csv, worst_errors.png, metrics.json")
    ev.add_argument("--threshold", type=float, default=0.5)
    ev.add_argument("--detector", default="auto", choices=DETECTORS)
    ev.add_argument("--probe", action="store_true",
                    help="also rescore every photo under capture changes (brightness, gamma, JPEG, blur, box "
                         "scale) and show how the scores and decisions move (with --report: probe.csv)")


def _add_runs(sub: argparse._SubParsersAction) -> None:
    """`results summary` and `reproduce`."""
    rs = sub.add_parser("results", help="what a run folder holds").add_subparsers(dest="results_cmd", required=True)
    su = rs.add_parser("summary", help="the README results section, rendered from a run folder's tables")
    su.add_argument("--run-dir", default="results")
    su.add_argument("--write", default=None, metavar="README", help="replace that file's results block")

    r = sub.add_parser("reproduce", help="run notebooks 00-05 through papermill")
    r.add_argument("--profile", default="default", choices=PROFILE_NAMES)
    r.add_argument("--run-dir", default="results")
    r.add_argument("--data-root", default="")
    r.add_argument("--seeds", default=None, type=_seed_list,
                   help="comma-separated training seeds, e.g. 0,1,2 (default: the profile's)")
    r.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 00,01")
    r.add_argument("--param", action="append", default=[], help="extra notebook parameter key=value")
    r.add_argument("--force", action="store_true",
                   help="rerun every selected notebook, even those whose inputs did not change")
    r.add_argument("--jobs", default=None, type=int,
                   help="notebooks run side by side when their inputs are ready (default: 2 on >= 2 cores, "
                        "else 1); timings still run on a quiet machine")


def _add_cache_benches(b: argparse._SubParsersAction) -> None:
    """`bench index` and `bench train` (paperkit.cache)."""
    bi = b.add_parser("index", help="index build time per 1,000 entries, cold (all cores) and warm (cached)")
    bi.add_argument("--root", required=True, help="CelebA-Spoof tree")
    bi.add_argument("--workers", type=int, default=None, help="processes for the cold build (default: all cores)")
    bi.add_argument("--json", action="store_true")
    bt = b.add_parser("train", help="No-PTA training img/s with and without the crop cache, interleaved")
    bt.add_argument("--root", default="", help="dataset root (default: the embedded dataset)")
    bt.add_argument("--steps", type=int, default=24, help="timed steps per round and mode")
    bt.add_argument("--rounds", type=int, default=3)
    bt.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the profile's)")
    bt.add_argument("--json", action="store_true")


def _seed_list(text: str) -> list[int] | None:
    """`--seeds 0,1,2`: argparse turns a bad value into its one-line usage error."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes comma-separated integers such as 0,1,2, not {text!r}") from None
    return seeds or None


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a parsed command line to the module that implements the verb.

    Long because it is one flat `if` per verb, each a lazy import and a single call, so that a verb loads
    only the modules it needs.
    """
    a = build_parser().parse_args(argv)
    if a.cmd == "data" and a.data_cmd == "summary":
        from . import index
        return index.cli_summary(a.root, a.json)
    if a.cmd == "data" and a.data_cmd == "synth":
        from . import synth
        return synth.cli_synth(a.out, a.profile, a.seed, a.faces)
    if a.cmd == "profile":
        from . import complexity
        return complexity.cli_table4(a.json)
    if a.cmd == "bench" and a.bench_cmd == "latency":
        from . import bench
        return bench.cli_latency(a.profile, a.run_dir, a.json)
    if a.cmd == "bench" and a.bench_cmd == "data":
        from . import data, profiles
        root = data.resolve_root(a.root, profiles.get_profile("default"), 0)
        print(json.dumps(data.bench_loading(root, size=a.size), indent=2))
        return 0
    if a.cmd == "bench" and a.bench_cmd == "detect":
        from . import bench
        return bench.cli_detect(a.folder, [d for d in a.detectors.split(",") if d], a.root, a.check_boxes,
                                a.model, a.limit, a.json)
    if a.cmd == "bench" and a.bench_cmd == "bn":
        from . import bench
        return bench.cli_bn(a.profile, a.rounds, a.json)
    if a.cmd == "bench" and a.bench_cmd in ("index", "train"):
        from . import cache
        if a.bench_cmd == "index":
            return cache.cli_bench_index(a.root, a.json, a.workers)
        return cache.cli_bench_train(a.root or None, a.steps, a.rounds, a.workers, a.json)
    if a.cmd == "bench" and a.bench_cmd == "synth":
        from . import synth
        print(json.dumps(synth.bench(n=a.n), indent=2))
        return 0
    if a.cmd == "predict":
        from . import predict
        return predict.cli_predict(a.paths, a.model, a.threshold, a.json, a.csv, a.detector, a.model_info)
    if a.cmd == "evaluate":
        from . import evaluate
        return evaluate.cli_evaluate(a.root, a.model, a.report, a.threshold, a.detector, a.probe)
    if a.cmd == "results":
        from . import summary
        try:
            if a.write:
                changed = summary.write_readme(a.write, a.run_dir)
                print(f"{a.write}: results block {'rewritten' if changed else 'already up to date'} from {a.run_dir}")
            else:
                print(summary.markdown(a.run_dir), end="")
        except (summary.SummaryError, OSError) as e:
            print(f"paperkit results summary: {e}", file=sys.stderr)
            return 1
        return 0
    if a.cmd == "reproduce":
        from . import reproduce
        try:
            reproduce.run(profile=a.profile, run_dir=a.run_dir, data_root=a.data_root,
                          seeds=a.seeds,
                          only=[o for o in a.only.split(",") if o], extra=_parse_kv(a.param), force=a.force,
                          jobs=a.jobs)
        except reproduce.Interrupted as e:
            print(f"paperkit reproduce: {e}", file=sys.stderr)
            return 128 + e.signum
        except reproduce.ReproduceError as e:
            print(f"paperkit reproduce: {e}", file=sys.stderr)
            return 1
        return 0
    raise AssertionError("unreachable")


if __name__ == "__main__":
    sys.exit(main())
