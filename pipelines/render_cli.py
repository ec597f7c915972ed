"""The ``fit`` and ``render`` commands: fit a person's models on one clip, then re-voice them."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .errors import LandmarkTalkError

__all__ = ["add_fit_command", "add_render_command"]

logger = logging.getLogger(__name__)


def _bar(desc: str, unit: str):
    from tqdm.auto import tqdm

    bars: dict[str, object] = {}

    def progress(*args) -> None:
        name, done, total = (desc, *args) if len(args) == 2 else args
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(desc=name, total=total, unit=unit, dynamic_ncols=True)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return progress


def _run_fit(args: argparse.Namespace) -> int:
    from .fit import fit_person

    for option, value in (("--speech-encoder", args.speech_encoder), ("--a2l-init", args.a2l_init)):
        if value and args.path != "l2v":
            raise LandmarkTalkError(f"{option}: only the l2v path has an A2L; drop it with --path {args.path}")
    if args.path == "dae":
        return _run_fit_dae(args)
    record = fit_person(
        args.clip, args.out, preset=args.preset, path=args.path, holdout=args.holdout, codec=args.codec,
        steps=args.steps, cache_dir=args.cache_dir, seed=args.seed, speech_encoder=args.speech_encoder,
        a2l_init=args.a2l_init, progress=_bar("fit", "step"),
    )
    logger.info("models in %s: %s", args.out, ", ".join(record["files"].values()))
    if args.holdout > 0 and args.path == "l2v":
        from .holdout import evaluate_holdout

        report = evaluate_holdout(args.out, steps=args.render_steps, refiner=args.refiner, seeds=args.holdout_seeds,
                                  seed_candidates=args.seed_candidates, seed_probe_frames=args.seed_probe_frames,
                                  denoise=args.denoise, motion_scale=args.motion_scale,
                                  center_motion=args.center_motion, progress=_bar("holdout render", "frame"))
        logger.info("hold-out figures written to %s", report)
    return 0


def _run_fit_dae(args: argparse.Namespace) -> int:
    from .dae import evaluate_dae_holdout, fit_dae

    record = fit_dae(args.clip, args.out, holdout=args.holdout, steps=args.steps, preset=args.preset,
                     cache_dir=args.cache_dir, seed=args.seed, progress=_bar("fit", "step"))
    logger.info("DAE models in %s: %s", args.out, ", ".join(str(f) for f in record.get("files", {}).values()))
    if args.holdout > 0:
        evaluate_dae_holdout(args.out, steps=args.render_steps, progress=_bar("holdout render", "frame"))
        logger.info("hold-out figures written to %s", Path(args.out) / "dae_holdout.json")
    return 0


def add_fit_command(subparsers) -> None:
    from .fit import FIT_PATHS, FIT_PRESETS
    from .render import RENDER_DENOISE, SEED_SEARCH_CANDIDATES, SEED_SEARCH_PROBE_FRAMES

    parser = subparsers.add_parser("fit", help="fit a person's models (face autoencoder, A2L, L2V) on one clip")
    parser.add_argument("clip", help="a talking clip of the person, with audio")
    parser.add_argument("--out", required=True, help="folder for the model files (kept files are not retrained)")
    parser.add_argument("--preset", choices=sorted(FIT_PRESETS), default="tiny",
                        help="tiny: CPU minutes at 128² crops; base: paper-like 256², for a GPU")
    parser.add_argument("--path", choices=FIT_PATHS + ("dae",), default="l2v",
                        help="l2v: A2L + landmark diffusion (default); ladtalk: the SOVQAE refiner for Wav2Lip "
                             "output; dae: DAE-Talker's diffusion autoencoder + speech-to-latent Conformer")
    parser.add_argument("--holdout", type=float, default=0.0,
                        help="train on the first 1-H of the clip, then render and score the tail (e.g. 0.2)")
    parser.add_argument("--codec", default=None,
                        help="use this latent codec (face autoencoder file or TAEF2 folder) instead of training one")
    parser.add_argument("--steps", type=int, default=None, help="override every model's training steps")
    parser.add_argument("--speech-encoder", default=None,
                        help="A2L reads this local wav2vec2/HuBERT folder's hidden states (save_pretrained; needs "
                             "`transformers`) instead of log-mel; renders find it through the fit's record")
    parser.add_argument("--a2l-init", default=None,
                        help="fine-tune the person's A2L from this checkpoint (e.g. `train a2l` on many clips) "
                             "instead of training it from scratch; its settings are kept")
    parser.add_argument("--render-steps", type=int, default=20, help="sampler steps for the hold-out render")
    parser.add_argument("--holdout-seeds", type=int, default=1,
                        help="hold-out: render with this many noise seeds and report each figure's mean and "
                             "spread (one seed moves a whole clip's figures; default %(default)s)")
    parser.add_argument("--seed-candidates", type=int, default=SEED_SEARCH_CANDIDATES,
                        help="hold-out: the render's seed search (see `render --seed-candidates`; default "
                             "%(default)s, 1 = off)")
    parser.add_argument("--seed-probe-frames", type=int, default=SEED_SEARCH_PROBE_FRAMES,
                        help="hold-out: frames the seed search renders per candidate (default %(default)s)")
    parser.add_argument("--denoise", type=float, default=RENDER_DENOISE,
                        help="hold-out: the render's sampling strength (see `render --denoise`; default %(default)s)")
    _add_motion_arguments(parser, "hold-out: ")
    parser.add_argument("--refiner", default=None,
                        help="hold-out: refine every generated crop with this SOVQAE file (from `fit CLIP --path "
                             "ladtalk --holdout` with the same hold-out); figures go to OUT/holdout_refined/")
    parser.add_argument("--cache-dir", default=None, help="where the clip is prepared (default $LANDMARKTALK_CACHE)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.set_defaults(func=_run_fit)


def _run_render(args: argparse.Namespace) -> int:
    from .fit import read_fit_record

    if args.path == "dae":
        from .dae import render_dae_video

        if args.refiner:
            raise LandmarkTalkError("--refiner: SOVQAE refines L2V renders; drop it with --path dae")
        if args.speech_encoder:
            raise LandmarkTalkError("--speech-encoder: only A2L reads a speech encoder; drop it with --path dae")
        out = render_dae_video(args.face, args.audio, args.models, args.out, pose=args.pose, steps=args.steps,
                               chunk_frames=args.chunk_frames, length_mode=args.length_mode, device=args.device,
                               overwrite=args.overwrite, progress=_bar("render", "frame"))
        logger.info("wrote %s", Path(out))
        return 0
    if args.pose:
        raise LandmarkTalkError("--pose: pose curves drive the DAE path; add --path dae (L2V follows the face video)")
    from .render import RenderSettings, load_talking_head_models, render_video

    record = read_fit_record(args.models) or {}
    codec = args.codec or (record["codec"] if record.get("codec") and Path(record["codec"]).is_absolute() else None)
    models = load_talking_head_models(args.models, codec=codec, refiner=args.refiner,
                                      speech_encoder=args.speech_encoder, device=args.device)
    settings = RenderSettings(
        steps=args.steps, sampler=args.sampler, guidance=args.guidance, seed=args.seed,
        seed_candidates=args.seed_candidates, seed_probe_frames=args.seed_probe_frames,
        chunk_frames=args.chunk_frames, length_mode=args.length_mode, progressive=args.progressive, denoise=args.denoise,
        motion_scale=args.motion_scale, center_motion=args.center_motion,
        face=int(args.face_choice) if args.face_choice.isdigit() else args.face_choice, fps=args.fps,
        crf=args.crf, device=args.device, dtype=args.dtype, paste_region=args.paste_region,
        video_in_memory_mb=args.video_in_memory_mb,
    )
    out = render_video(args.face, args.audio, models, args.out, settings, overwrite=args.overwrite,
                       pose_video=args.pose_video,
                       progress=_bar("render", "frame"))
    logger.info("wrote %s", Path(out))
    return 0


def _add_motion_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    from .render import RENDER_CENTER_MOTION, RENDER_MOTION_SCALE

    parser.add_argument("--motion-scale", type=float, default=RENDER_MOTION_SCALE,
                        help=prefix + "scale of A2L's mouth motion in [0, 2]: 1 = as predicted, 0 = the face video's "
                             "median mouth held still (default %(default)s)")
    parser.add_argument("--no-center-motion", dest="center_motion", action="store_false", default=RENDER_CENTER_MOTION,
                        help=prefix + "keep A2L's motion as predicted instead of centring it on the face video's "
                             "median mouth (a photo is never centred)")


def add_render_command(subparsers) -> None:
    from .render import RENDER_DENOISE, SEED_SEARCH_CANDIDATES, SEED_SEARCH_PROBE_FRAMES
    from .schedule import LENGTH_MODES

    parser = subparsers.add_parser("render", help="make the person in a photo or video say new speech")
    parser.add_argument("--face", required=True, help="photo or video of the person (the one the models were fitted on)")
    parser.add_argument("--audio", required=True, help="speech: wav/mp3/flac/m4a or a video's audio track")
    parser.add_argument("--models", required=True, help="folder written by `fit` (a2l, l2v, face_autoencoder)")
    parser.add_argument("--out", required=True, help="output .mp4 (never overwritten unless --overwrite)")
    parser.add_argument("--codec", default=None, help="latent codec, when the L2V model was fitted with --codec")
    parser.add_argument("--refiner", default=None,
                        help="the person's SOVQAE file (`fit CLIP --path ladtalk`): restores detail in every "
                             "generated face crop before paste-back")
    parser.add_argument("--speech-encoder", default=None,
                        help="the wav2vec2/HuBERT folder A2L was fitted with (default: the one the fit recorded)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (default %(default)s)")
    parser.add_argument("--sampler", default="dpmpp_2m", help="dpmpp_2m, ddim or euler (default %(default)s)")
    parser.add_argument("--guidance", type=float, default=1.0, help="guidance on the landmark condition; 1 = off")
    parser.add_argument("--seed", type=int, default=0, help="noise seed, shared by every frame")
    parser.add_argument("--seed-candidates", type=int, default=SEED_SEARCH_CANDIDATES,
                        help="seed search: render the first --seed-probe-frames with seeds SEED … SEED+N-1 and keep "
                             "the one whose mouth follows the landmarks best (default %(default)s, 1 = off)")
    parser.add_argument("--seed-probe-frames", type=int, default=SEED_SEARCH_PROBE_FRAMES,
                        help="frames the seed search renders per candidate (default %(default)s)")
    parser.add_argument("--denoise", type=float, default=RENDER_DENOISE,
                        help="sampling strength in (0, 1]: below 1 every frame starts from the first source frame "
                             "noised to this level instead of pure noise, keeping its lips where the landmarks "
                             "agree (default %(default)s)")
    _add_motion_arguments(parser)
    parser.add_argument("--chunk-frames", type=int, default=16, help="frames per chunk (memory vs speed)")
    parser.add_argument("--length-mode", choices=LENGTH_MODES, default="pingpong",
                        help="when the audio is longer than the face video: play it back and forth, or loop")
    parser.add_argument("--progressive", type=float, default=0.0,
                        help="DiffTalk's progressive reference: mix of the previous generated frame (0..1)")
    parser.add_argument("--face-choice", default="largest", help="largest, nearest, or a face index (left to right)")
    parser.add_argument("--fps", type=float, default=None, help="output rate (default: the face video's; 25 for a photo)")
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="compute precision (bfloat16 on CUDA)")
    parser.add_argument("--path", choices=["l2v", "dae"], default="l2v",
                        help="which fitted models render: l2v (default) or dae (folder written by fit --path dae)")
    parser.add_argument("--pose", default="",
                        help="DAE path: head pose curves in degrees, e.g. 'yaw: sin 8 2.0' (amplitude, period s) "
                             "or 'yaw: 0, 10, -5' (keyframes); unset angles follow the face video")
    parser.add_argument("--pose-video", default=None,
                        help="with a photo as --face: a video whose head motion (shift, roll, scale) the photo follows")
    parser.add_argument("--video-in-memory-mb", type=int, default=2048,
                        help="face videos whose decoded frames exceed this are kept in a temporary folder instead "
                             "of memory (default %(default)s)")
    parser.add_argument("--paste-region", choices=["lower", "face"], default="lower",
                        help="paste back the mouth and jaw only (default) or the whole generated face")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=_run_render)
