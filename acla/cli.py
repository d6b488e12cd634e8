"""``python -m acla search|train|evaluate|profile|restore|gpu-check|plan``: the study's steps from a shell.

Every verb reads ``--config params.yaml`` (profile from the file, or ``--profile``) and a ``--task``
name (sr_x2, sr_x3, sr_x4, denoise_color_s30, denoise_gray_s25, demosaic, jpeg_q20, ...). Errors
in the input are reported in one line naming the parameter, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from acla.config import ConfigError, load_config
from acla.data.sets import DataError, resolve_data_root
from acla.images import ImageReadError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m acla", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)

    def common(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", default="params.yaml", help="params file (default: params.yaml)")
        sub.add_argument("--profile", help="profile of the params file: smoke, gpu or paper (default: the file's)")
        sub.add_argument("--task", required=True, help="task name, e.g. sr_x2, denoise_color_s30, demosaic, jpeg_q20")
        sub.add_argument("--data-root", help="data root (beats params.yaml data.root and $ACLA_DATA)")
        return sub

    search = common("search", "search insertion locations; writes alpha.csv, alpha.png and arch.json to --out")
    search.add_argument("--out", required=True, help="output folder")

    train = common("train", "train a model (single process, or under torchrun for DDP); checkpoints to --out")
    train.add_argument("--out", required=True, help="output folder (last.pt, best.pt, dvclive/)")
    train.add_argument("--arch", help="arch.json from a search (default: model section of the params file)")
    train.add_argument("--resume", action="store_true", help="continue from --out/last.pt (config must match)")

    def inference_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--checkpoint", required=True, help="checkpoint (last.pt or best.pt)")
        sub.add_argument("--tile", type=int, default=0, help="tile side in input pixels (0: whole image)")
        sub.add_argument("--overlap", type=int, default=16, help="context pixels around each tile")
        sub.add_argument("--auto-tile", action="store_true", help="pick the tile side from free GPU memory")
        sub.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (x8)")
        sub.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")

    evaluate = common("evaluate", "score a checkpoint on every test set of the task; per-image and mean CSVs")
    inference_options(evaluate)
    evaluate.add_argument("--out", required=True, help="output folder (per_image.csv, mean.csv, crops/)")
    evaluate.add_argument("--sets", nargs="+", help="test sets (default: the task's benchmarks in the data root)")

    restore = common("restore", "restore one degraded image file")
    inference_options(restore)
    restore.add_argument("--input", required=True, help="degraded image (LR, noisy, mosaiced or JPEG)")
    restore.add_argument("--output", required=True, help="restored PNG to write")

    profile = common("profile", "parameters, FLOPs, peak memory and latency of the configured model")
    profile.add_argument("--arch", help="arch.json from a search (default: model section of the params file)")
    profile.add_argument("--input-size", type=int, nargs=2, default=(48, 48), metavar=("H", "W"),
                         help="network input size (LR size for SR)")
    profile.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")

    from acla.gpu_check.command import __doc__ as gpu_check_doc
    from acla.gpu_check.command import add_arguments as gpu_check_arguments

    gpu_check_arguments(verbs.add_parser("gpu-check", help="correctness, speed and learning of this machine's torch "
                                         "(reports/gpu/<device>/)", description=gpu_check_doc,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    verbs.add_parser("plan", add_help=False, help="the runs of a profile's stages, their device-hours and wall time "
                     "on N GPUs (python -m acla plan --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["plan"]:  # its own options: acla.study.plan
        from acla.study.plan import main as plan

        return plan((sys.argv[1:] if argv is None else argv)[1:])
    args = build_parser().parse_args(argv)
    from acla.engine.evaluate import Inference, evaluate, restore
    from acla.engine.search import search
    from acla.engine.train import CheckpointError, ModelSpec, load_model, train
    from acla.tasks import parse_task

    try:
        if args.verb == "gpu-check":
            from acla.gpu_check.command import run

            return run(args, from_command_line=argv is None)  # the command line's budget counts from process start
        config = load_config(args.config, args.profile)
        task = parse_task(args.task)
        data_root = resolve_data_root(args.data_root, config.data.root)
        if args.verb == "search":
            print(json.dumps(search(args.task, config, args.out, data_root=data_root), indent=2))
        elif args.verb == "train":
            spec = ModelSpec.from_arch(args.arch) if args.arch else ModelSpec.from_config(args.task, config.model)
            if spec.task != args.task:
                raise ValueError(f"--arch {args.arch} was searched for task {spec.task!r}, not --task {args.task!r}")
            result = train(spec, config, args.out, data_root=data_root, resume=args.resume)
            print(json.dumps({"best_psnr": result.best_psnr, "last_psnr": result.last_psnr,
                              "last_ssim": result.last_ssim, "checkpoint": str(result.checkpoint)}))
        elif args.verb in ("evaluate", "restore"):
            model, spec = load_model(args.checkpoint)
            if spec.task != task.name:
                raise ValueError(f"--checkpoint {args.checkpoint} is for task {spec.task!r}, not --task {args.task!r}")
            inference = Inference(args.tile, args.overlap, args.self_ensemble, args.auto_tile)
            if args.verb == "evaluate":
                mean = evaluate(model, args.task, args.out, data_root=data_root, sets=args.sets, inference=inference,
                                seed=config.train.seed, verify=config.data.verify, device=args.device)
                print(mean.to_string(index=False))
            else:
                restore(model, args.task, args.input, args.output, inference=inference, device=args.device)
        else:
            from acla.engine.efficiency import profile

            spec = ModelSpec.from_arch(args.arch) if args.arch else ModelSpec.from_config(args.task, config.model)
            channels = 3 if task.color == "rgb" else 1
            result = profile(spec.build(), (1, channels, *args.input_size), device=args.device)
            print(json.dumps(result.as_dict(), indent=2))
    except (ConfigError, DataError, CheckpointError, ImageReadError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
