"""The private-face step (paper Fig. 2, docs/method.md §1 "Order at inference"), fused and staged.

``make_private_step(config, method)`` returns ONE pure function

    private_step(params, x_lowlight, key) -> (private_frames, diagnostics)

meant to be wrapped in ``jax.jit``. Read top to bottom it is the paper's pipeline:

    enhance (ours only)                      light enhancement network, component 1
    detect + aligned crop                    face cropping network, component 2
    encode                                   latent code generation network, component 3
    lax.while_loop, per-sample done-mask:    components 4, 5, 6, 7
        w <- w + s_k n   (not-done samples)  docs/method.md §4.6 latent noise, s_k = s_0 * growth**k
        synthesize (const noise)             face generation network
        attenuate (ours only)                light attenuation network
        embed with every white-box judge     recognizers, cosine similarity to the ORIGINAL face
        done once every judge's similarity < config.recognizer.threshold
    paste back into the low-light frame      component 8
    judge the released frame                 detect again, every judge on several crops of it

The "original" face a judge compares with is the face the generator started from:
the enhanced crop for ours, the low-light crop for the baselines (which see no light
networks, docs/method.md §4.5). ``config.deid.judge_views="both"`` makes ours check both the
normal-light synthesized face and the released, attenuated face (the reported
similarity per judge is the larger of the two).

FAIL CLOSED, judged on what is released (docs/method.md §4.4). The step decides on the
frame it would release (`release`), never on the generated crop: the *fallback square*
(the face box grown by ``deid.fallback_margin`` per side) is pixelated and the generated
face is feathered over it, so no input pixel of the face survives; the detector runs again
on that frame, and every judge embeds crops of it at the box found again, the original box,
and that box scaled and shifted (`frame_views`). A *success* needs: one face detected (score
>= crop.score_threshold, at least ``deid.min_face_pixels`` a side, no second face at or above
``max(deid.second_face_threshold, crop.score_threshold)`` outside its aligned square); a
valid released face (finite, mean luminance >= ``deid.valid_luminance_ratio`` of the
input face's, found again with IoU >= crop.iou_threshold); and every judge rejecting both
the loop's last faces and every view, within ``deid.max_iters`` iterations. Any other
sample is released as a *fallback* (``fallback=True``): the square pixelated to
``deid.fallback_cells`` cells when a face was found, the whole frame to
``deid.fallback_frame_cells`` cells when none was, or when a second face was
(``multiple_faces=True``, ``detected=False``). ``replaced_mask`` [B, S, S] marks the pixels
a released frame does not keep; ``jaxdeid deidentify`` writes its full-resolution file with it.

``make_staged_pipeline(config, method)`` is the same computation with every network
jitted on its own, numpy arrays passed between stages on the host, and the noise
loop as a Python loop; it exists to check the fused step and to measure what fusion
buys. Both are built from the same stage functions (`make_stages`), so they can only
differ by floating-point reassociation.

``config.deid.compute_dtype="bfloat16"`` runs every network call in bf16 (variables and
inputs cast at the call, outputs cast back to float32; `cast_floating`); the loop's
bookkeeping stays float32 either way. bf16 judges drift from float32 ones (up to ~0.03
in cosine similarity, tests/test_bf16.py), so in bf16 mode the loop's stopping test uses
the bf16 judges but the privacy DECISION does not: after the loop every judge is run
once more in float32 (original and final faces, same views) and ``success`` needs those
float32 similarities below the threshold. ``similarities`` in the diagnostics are the
deciding ones; ``loop_similarities`` are what the loop stopped on (equal in float32).

``params`` is a pytree holding every network's variables (see `jaxdeid.deid.pipeline`):
``{"detector", "encoder", "generator", "judges": {arch: ...}}`` plus ``"enhance"`` and
``"attenuate"`` for ours.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .. import crop as crop_ops
from ..encoder import make_encoder
from ..gan import make_generator
from ..light import make_model as make_light
from ..light.retinex import mean_luminance   # BT.601 luma: the "mean luminance" of docs/method.md §4.4
from ..recognizers.model import make_recognizer
from ..train.sharding import data_mesh, replicate, shard_batch
from .methods import GENERATOR_ARCH, check_method, uses_light_networks

# Views of a released frame that every judge must reject (`frame_views`): the original box
# scaled by these factors, and shifted by these fractions of its height and width.
VIEW_SCALES = (0.85, 1.15)
VIEW_SHIFTS = ((-0.1, 0.0), (0.1, 0.0), (0.0, -0.1), (0.0, 0.1))

COMPUTE_DTYPES = ("float32", "bfloat16")


def cast_floating(tree, dtype):
    """Casts every floating-point array of `tree` to `dtype`; integers, bools and keys pass through.

    This is how ``config.deid.compute_dtype="bfloat16"`` runs the networks in bf16:
    flax layers with ``dtype=None`` compute in the dtype promoted from their inputs and
    their parameters, so casting BOTH to bf16 at the network call makes every conv and
    matmul a bf16 one without touching the model code. Everything outside the network
    calls (cosine similarities, threshold tests, latent-noise accumulation, luminance,
    paste-back) is float32 arithmetic. That alone does not make decisions float32: a
    similarity computed from bf16 judge embeddings drifts by up to ~0.03 from the float32
    one, which is why the private step re-judges its final faces with float32 judges
    before deciding success (module docstring).
    """
    dtype = jnp.dtype(dtype)

    def cast(x):
        return x.astype(dtype) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def pixelate(images: jax.Array, cells: int) -> jax.Array:
    """Area-averages each image to ``cells x cells`` blocks and blows them up again (nearest).

    With 4 cells a face carries 48 numbers: nothing a recognizer (or a person) can
    identify, but the frame keeps its layout and brightness.
    """
    batch, height, width, channels = images.shape
    small = jax.image.resize(images, (batch, cells, cells, channels), "linear", antialias=True)
    return jax.image.resize(small, (batch, height, width, channels), "nearest")


# --------------------------------------------------------------------------- networks


@dataclasses.dataclass(frozen=True)
class Networks:
    """The Flax modules of one method (static; their variables live in ``params``)."""

    method: str
    enhance: nn.Module | None      # light enhancement (ours only)
    attenuate: nn.Module | None    # light attenuation (ours only)
    detector: nn.Module            # face cropping network
    encoder: nn.Module             # latent code generation network for `generator`
    generator: nn.Module           # StyleGAN2 / StyleGAN1 / PGGAN generator
    judges: tuple[tuple[str, nn.Module], ...]  # (arch, recognizer) white-box judges, config order


def make_networks(config, method: str) -> Networks:
    """Builds every module `method` needs from the config (no variables)."""
    check_method(method)
    arch = GENERATOR_ARCH[method]
    light = uses_light_networks(method)
    judges = tuple((name, make_recognizer(config, name)) for name in config.recognizer.judges)
    if not judges:
        raise ValueError("config.recognizer.judges is empty: the noise loop needs at least one white-box judge")
    return Networks(
        method=method,
        enhance=make_light(config, "enhance") if light else None,
        attenuate=make_light(config, "attenuate") if light else None,
        detector=crop_ops.make_detector(config),
        encoder=make_encoder(config, arch),
        generator=make_generator(config.gan, arch),
        judges=judges,
    )


# --------------------------------------------------------------------------- stages


class Stages(NamedTuple):
    """Pure stage functions shared by the fused step and the staged pipeline."""

    networks: Networks
    enhance: Callable          # (params, frames) -> frames fed to the detector / encoder
    detect: Callable           # (params, frames) -> boxes [B,4], scores [B], second_scores [B]
    found: Callable            # (boxes, scores, second_scores) -> [B] bool: one usable face, no second one
    multiple_faces: Callable   # (second_scores) -> [B] bool: a second confident face outside the first's square
    crop_faces: Callable       # (frames_in, x_low, boxes) -> (original faces, low-light input faces)
    encode: Callable           # (params, faces) -> latents [B, num_ws, latent_dim]
    embed: Callable            # (params, arch, faces) -> unit embeddings [B, E]
    embed_float32: Callable    # the same with the judge in float32 (bf16 mode's final decision)
    perturb: Callable          # (w, key, k, active) -> w with noise on the active samples
    synthesize: Callable       # (params, w) -> faces in [0, 1]
    attenuate: Callable        # (params, faces, level) -> released faces
    similarities: Callable     # (embeddings [J,B,E], references [J,B,E]) -> [B, J]
    release: Callable          # (params, judge_params, embed, x_low, boxes, scores, second_scores, private faces,
                               #  input faces, references, loop similarities, threshold) -> frames, flags
    cast_params: Callable      # (params) -> params in the compute dtype (identity for float32)
    rejudge_float32: bool      # bf16 mode: decide success on float32 judges after the loop
    threshold: float
    max_iters: int
    judge_both_views: bool


def make_stages(config, method: str) -> Stages:
    """The building blocks of the private step, each a pure function of its inputs."""
    nets = make_networks(config, method)
    light = uses_light_networks(method)
    resolution = int(config.data.resolution)
    align_margin = float(config.crop.align_margin)
    feather = float(config.crop.feather)
    score_threshold = float(config.crop.score_threshold)
    iou_threshold = float(config.crop.iou_threshold)
    judge_archs = tuple(arch for arch, _ in nets.judges)
    min_frame_side = float(config.data.scene_resolution)
    dc = config.deid
    min_face_pixels = float(dc.min_face_pixels)
    # Never below the detection threshold (a peak the detector would not call a face is not
    # a second face either), never below the config floor (module docstring).
    second_face_threshold = max(float(dc.second_face_threshold), score_threshold)
    if dc.noise not in ("additive", "multiplicative"):
        raise ValueError(f"config.deid.noise must be 'additive' or 'multiplicative', not {dc.noise!r}")
    if dc.judge_views not in ("both", "output"):
        raise ValueError(f"config.deid.judge_views must be 'both' or 'output', not {dc.judge_views!r}")
    if float(dc.fallback_margin) < align_margin:
        # The generated face fills the aligned square; the replaced square must contain it.
        raise ValueError(f"deid.fallback_margin ({dc.fallback_margin}) must be at least crop.align_margin "
                         f"({align_margin}): the replaced square has to hold the pasted face")
    multiplicative = dc.noise == "multiplicative"
    sigma_start, sigma_growth = float(dc.sigma_start), float(dc.sigma_growth)
    modules = dict(nets.judges)
    compute_dtype = str(dc.get("compute_dtype", "float32"))
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"config.deid.compute_dtype must be one of {COMPUTE_DTYPES}, not {compute_dtype!r}")

    reduced_precision = compute_dtype != "float32"

    def to_compute_dtype(tree):
        # float32: the tree itself, so the traced graph is exactly the one without this knob.
        return cast_floating(tree, compute_dtype) if reduced_precision else tree

    def run_network(apply, variables, *inputs, **kwargs):
        # bfloat16: variables and inputs cast at the call, outputs cast back, so the loop
        # around the networks only ever sees float32 (see `cast_floating`).
        outputs = apply(to_compute_dtype(variables), *to_compute_dtype(inputs), **kwargs)
        return cast_floating(outputs, jnp.float32) if reduced_precision else outputs

    @jax.named_scope("enhance")
    def enhance(params, frames):
        if not light:
            return frames
        return jnp.clip(run_network(nets.enhance.apply, params["enhance"], frames), 0.0, 1.0)

    @jax.named_scope("detect")
    def detect(params, frames):
        # = crop_ops.detect, with the network in the compute dtype and the box decoding in float32,
        # plus the best score outside the square a success replaces (the aligned crop's).
        heads = run_network(nets.detector.apply, params["detector"], frames, train=False)
        return crop_ops.decode(heads, exclusion_margin=align_margin)

    def multiple_faces(second_scores):
        return second_scores >= second_face_threshold

    def found(boxes, scores, second_scores):
        # A face counts when the detector is confident AND its box is not degenerate: a box a
        # few pixels wide cannot be the face, and pasting/pixelating it would leave the real
        # face untouched, so such frames take the whole-frame fallback (fail closed). So do
        # frames with a second face: only one face per frame is made private.
        side_px = jnp.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * min_frame_side
        return (scores >= score_threshold) & (side_px >= min_face_pixels) & ~multiple_faces(second_scores)

    @jax.named_scope("crop")
    def crop_faces(frames_in, x_low, boxes):
        original = crop_ops.aligned_crop(frames_in, boxes, resolution, align_margin)
        low = original if not light else crop_ops.aligned_crop(x_low, boxes, resolution, align_margin)
        return original, low

    @jax.named_scope("encode")
    def encode(params, faces):
        return run_network(nets.encoder.apply, params["encoder"], faces)

    def embed(params, arch, faces):
        with jax.named_scope(f"judge_{arch}"):
            embeddings = run_network(modules[arch].apply, params["judges"][arch], faces, train=False)
            if reduced_precision:
                # Re-normalise in float32 so the dot product in `similarities` is a cosine (docs/method.md §4.1)
                # whatever rounding the network's last layers saw.
                embeddings = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
            return embeddings

    def embed_float32(params, arch, faces):
        # `params` must be the float32 variables (not `cast_params`' output).
        with jax.named_scope(f"judge_{arch}"):
            return modules[arch].apply(params["judges"][arch], faces, train=False)

    @jax.named_scope("perturb")
    def perturb(w, key, k, active):
        # docs/method.md §4.6: s_k grows geometrically; a fresh draw per iteration, keyed by k so the
        # staged pipeline draws exactly the same noise.
        sigma = sigma_start * sigma_growth ** jnp.asarray(k, jnp.float32)
        noise = jax.random.normal(jax.random.fold_in(key, k), w.shape, w.dtype)
        moved = w * (1.0 + sigma * noise) if multiplicative else w + sigma * noise
        return jnp.where(active[:, None, None], moved, w)

    @jax.named_scope("synthesize")
    def synthesize(params, w):
        return run_network(nets.generator.apply, params["generator"], w, method="synthesize", noise_mode="const",
                           clip=True)

    @jax.named_scope("attenuate")
    def attenuate(params, faces, level):
        if not light:
            return faces
        # The attenuation network is told the input face's mean luminance (light/retinex.py),
        # so the private face keeps the brightness of the low-light original.
        if nets.attenuate.level_input:
            return run_network(nets.attenuate.apply, params["attenuate"], faces, level)
        return run_network(nets.attenuate.apply, params["attenuate"], faces)

    def similarities(embeddings, references):
        # Unit-norm embeddings: the cosine similarity is the dot product (docs/method.md §4.1).
        return jnp.sum(embeddings * references, axis=-1).T

    def replaced_regions(x_low, boxes, detected):
        # What a released frame does not keep of the input (fail closed, module docstring):
        # the fallback square around a detected face, the whole frame otherwise. Hard-edged:
        # every pixel with mask 1 is replaced, every pixel with mask 0 is the input's.
        squares = crop_ops.square_boxes(boxes, (x_low.shape[1], x_low.shape[2]), float(dc.fallback_margin))
        square_masks = jax.vmap(lambda s: crop_ops.feather_mask((x_low.shape[1], x_low.shape[2]), s, 0.0))(squares)
        return squares, jnp.where(detected[:, None, None, None], square_masks, 1.0)

    def frame_views(boxes, released_boxes):
        # Where a recognizer could look for the face in a released frame: the box found in it,
        # the original box, and the original box 15 % smaller / larger and shifted by 10 % of
        # its side each way. [V, B, 4]
        cy, cx = 0.5 * (boxes[:, 0] + boxes[:, 2]), 0.5 * (boxes[:, 1] + boxes[:, 3])
        h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]

        def box(dy, dx, scale):
            y, x = cy + dy * h, cx + dx * w
            return jnp.stack([y - 0.5 * scale * h, x - 0.5 * scale * w, y + 0.5 * scale * h, x + 0.5 * scale * w], -1)

        shifted = [box(dy, dx, 1.0) for dy, dx in VIEW_SHIFTS]
        scaled = [box(0.0, 0.0, s) for s in VIEW_SCALES]
        return jnp.stack([released_boxes, boxes, *scaled, *shifted])

    def release(params, judge_params, embed, x_low, boxes, scores, second_scores, private_faces, input_faces,
                references, loop_similarities, threshold):
        """The released frame of every sample and the decision, taken on that frame (fail closed)."""
        multiple = multiple_faces(second_scores)
        detected = found(boxes, scores, second_scores)   # False with a second face: whole-frame fallback
        finite = jnp.all(jnp.isfinite(private_faces), axis=(1, 2, 3))
        safe_faces = jnp.where(finite[:, None, None, None], private_faces, 0.0)
        bright_enough = mean_luminance(safe_faces) >= dc.valid_luminance_ratio * mean_luminance(input_faces)
        squares, replaced = replaced_regions(x_low, boxes, detected)
        # Face fallback: the fallback square pixelated (its input blown up from a few cells).
        cells = int(dc.fallback_cells)
        blocks = crop_ops.crop(x_low, squares, cells)
        blocks = jax.image.resize(blocks, (blocks.shape[0], resolution, resolution, 3), "nearest")
        face_fallback = crop_ops.paste_back(x_low, blocks, squares, margin=0.0, feather=0.0)
        # A private frame: the generated face pasted, feathered, over that pixelated square, so
        # the blend ring mixes generated and pixelated pixels and no input pixel survives
        # inside the fallback square, whatever the box's error.
        candidates = crop_ops.paste_back_aligned(face_fallback, safe_faces, boxes, align_margin, feather)
        # The decision is taken on the candidate frame as it would be released: detect again
        # (on its enhanced version for ours, as the detector sees frames), crop it at every
        # view, and every judge must reject every view against the original face.
        seen = enhance(params, candidates)
        released_boxes, released_scores, _ = detect(params, seen)
        redetected = (released_scores >= score_threshold) & (crop_ops.box_iou(released_boxes, boxes) >= iou_threshold)
        views = frame_views(boxes, released_boxes)
        num_views, batch = views.shape[0], boxes.shape[0]
        crops = jax.vmap(lambda b: crop_ops.aligned_crop(seen, b, resolution, align_margin))(views)
        crops = crops.reshape((num_views * batch,) + crops.shape[2:])
        view_sims = jnp.stack([jnp.sum(embed(judge_params, a, crops).reshape(num_views, batch, -1) * references[j],
                                       axis=-1) for j, a in enumerate(judge_archs)])    # [J, V, B]
        frame_similarities = jnp.max(view_sims, axis=1).T                                 # [B, J]
        similarities = jnp.maximum(loop_similarities, frame_similarities)   # NaN (loop never ran) stays NaN
        deidentified = detected & jnp.all(similarities < threshold, axis=1)
        valid = finite & bright_enough & redetected
        success = detected & valid & deidentified
        fallback_frames = jnp.where(detected[:, None, None, None], face_fallback, pixelate(x_low, int(
            dc.fallback_frame_cells)))
        frames = jnp.where(success[:, None, None, None], candidates, fallback_frames)
        flags = {"detected": detected, "multiple_faces": multiple, "valid": valid, "redetected": redetected,
                 "deidentified": deidentified, "success": success, "fallback": ~success,
                 "similarities": similarities, "frame_similarities": frame_similarities,
                 "released_box": released_boxes, "released_score": released_scores,
                 "replaced_mask": replaced[..., 0]}
        return frames, flags

    return Stages(networks=nets, enhance=enhance, detect=detect, found=found, multiple_faces=multiple_faces,
                  crop_faces=crop_faces, encode=encode, embed=embed, embed_float32=embed_float32,
                  perturb=perturb, synthesize=synthesize, attenuate=attenuate,
                  similarities=similarities, release=release,
                  cast_params=to_compute_dtype, rejudge_float32=reduced_precision,
                  threshold=float(config.recognizer.threshold),
                  max_iters=int(dc.max_iters), judge_both_views=(dc.judge_views == "both" and light))


def _judge_archs(stages: Stages) -> tuple[str, ...]:
    return tuple(arch for arch, _ in stages.networks.judges)


# --------------------------------------------------------------------------- fused step


class LoopState(NamedTuple):
    k: jax.Array              # iterations run so far (loop counter)
    latents: jax.Array        # [B, num_ws, latent_dim]
    done: jax.Array           # [B] bool: judged private, or nothing to do (no face)
    iterations: jax.Array     # [B] int32: noise steps this sample received
    similarities: jax.Array   # [B, J] latest (frozen once done)
    synthesized: jax.Array    # [B, R, R, 3] latest normal-light generator output
    private: jax.Array        # [B, R, R, 3] latest released (attenuated) face


def make_private_step(config, method: str = "ours") -> Callable:
    """``private_step(params, x_lowlight, key) -> (private_frames, diagnostics)``; pure, jit it.

    Args (of the returned function):
      params: every network's variables (`jaxdeid.deid.pipeline.load_params` / `init_params`).
      x_lowlight: [B, S, S, 3] low-light frames in [0, 1], S = config.data.scene_resolution.
      key: PRNG key for the latent noise.
      threshold: optional judge threshold overriding config.recognizer.threshold; pass an
        array to sweep thresholds with one compiled step (evaluation, tests).

    Returns:
      private_frames [B, S, S, 3]: private frames, or flagged fallbacks (module docstring);
      diagnostics: dict of per-sample arrays — iterations [B] int32, similarities [B, J]
      (judges in config.recognizer.judges order; NaN where the loop did not run: no face,
      or a second one; float32 judges in bf16 mode), loop_similarities [B, J] (what the
      loop stopped on; = similarities in float32 mode), box [B, 4], score [B],
      second_score [B] (best face score outside the face's aligned square),
      detected / multiple_faces / valid / deidentified / success / fallback [B] bool, the faces
      (original_faces, input_faces, synthesized_faces, private_faces [B, R, R, 3]) and the
      latents before (initial_latents) and after the loop (latents).
    """
    stages = make_stages(config, method)
    archs = _judge_archs(stages)

    def private_step(params, x_lowlight, key, threshold=None):
        threshold = stages.threshold if threshold is None else threshold
        exact_params = params   # float32: bf16 mode's final judgement
        # bf16: every weight is cast once here, outside the noise loop; the casts at each
        # network call (run_network) are then no-ops, not a per-iteration conversion.
        with jax.named_scope("cast_params"):
            params = stages.cast_params(params)
        frames_in = stages.enhance(params, x_lowlight)
        boxes, scores, second_scores = stages.detect(params, frames_in)
        original_faces, input_faces = stages.crop_faces(frames_in, x_lowlight, boxes)
        initial_latents = stages.encode(params, original_faces)
        with jax.named_scope("references"):
            references = jnp.stack([stages.embed(params, a, original_faces) for a in archs])
        level = mean_luminance(input_faces)
        detected = stages.found(boxes, scores, second_scores)
        batch = x_lowlight.shape[0]

        def judge(synthesized, private, embed=stages.embed, variables=params, refs=references):
            if not stages.judge_both_views:
                return stages.similarities(jnp.stack([embed(variables, a, private) for a in archs]), refs)
            # Both views in one batch: one recognizer call per judge (half the graph to compile).
            both = jnp.concatenate([private, synthesized])
            embeddings = jnp.stack([embed(variables, a, both) for a in archs])
            return jnp.maximum(stages.similarities(embeddings[:, :batch], refs),
                               stages.similarities(embeddings[:, batch:], refs))

        def keep_going(state: LoopState):
            return (state.k < stages.max_iters) & ~jnp.all(state.done)

        def add_noise_and_judge(state: LoopState):
            active = ~state.done
            latents = stages.perturb(state.latents, key, state.k, active)
            synthesized = stages.synthesize(params, latents)
            private = stages.attenuate(params, synthesized, level)
            sims = judge(synthesized, private)
            rejected_by_all = jnp.all(sims < threshold, axis=1)   # NaN never passes
            keep = lambda new, old: jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
            return LoopState(k=state.k + 1, latents=latents, done=state.done | (active & rejected_by_all),
                             iterations=state.iterations + active.astype(jnp.int32),
                             similarities=keep(sims, state.similarities),
                             synthesized=keep(synthesized, state.synthesized),
                             private=keep(private, state.private))

        start = LoopState(k=jnp.zeros((), jnp.int32), latents=initial_latents, done=~detected,
                          iterations=jnp.zeros((batch,), jnp.int32),
                          similarities=jnp.full((batch, len(archs)), jnp.nan, jnp.float32),
                          synthesized=jnp.zeros_like(original_faces), private=jnp.zeros_like(original_faces))
        with jax.named_scope("noise_loop"):
            end = jax.lax.while_loop(keep_going, add_noise_and_judge, start)
        final_similarities, judge_params, judge_embed, judge_refs = end.similarities, params, stages.embed, references
        if stages.rejudge_float32:
            # bf16 mode: the decision is taken on float32 judges (module docstring), original
            # and final faces both re-embedded; NaN (loop never ran) stays NaN.
            with jax.named_scope("rejudge_float32"):
                judge_params, judge_embed = exact_params, stages.embed_float32
                judge_refs = jnp.stack([stages.embed_float32(exact_params, a, original_faces) for a in archs])
                exact = judge(end.synthesized, end.private, embed=stages.embed_float32, variables=exact_params,
                              refs=judge_refs)
                final_similarities = jnp.where(jnp.isnan(end.similarities), jnp.nan, exact)
        with jax.named_scope("release"):
            frames, flags = stages.release(params, judge_params, judge_embed, x_lowlight, boxes, scores,
                                           second_scores, end.private, input_faces, judge_refs,
                                           final_similarities, threshold)
        diagnostics = {"iterations": end.iterations, "loop_similarities": end.similarities, "box": boxes,
                       "score": scores,
                       "second_score": second_scores, **flags,
                       "original_faces": original_faces, "input_faces": input_faces,
                       "synthesized_faces": end.synthesized, "private_faces": end.private,
                       "initial_latents": initial_latents, "latents": end.latents}
        return frames, diagnostics

    private_step.judges = archs
    private_step.method = method
    return private_step


# --------------------------------------------------------------------------- staged twin


def make_staged_pipeline(config, method: str = "ours") -> Callable:
    """The same computation as `make_private_step`, but un-fused: for checks and profiling.

    Every network is its own ``jax.jit``; stages exchange numpy arrays on the host, and
    the noise loop is a Python loop that stops when every sample is done or at the cap.
    Returns ``staged(params, x_lowlight, key) -> (frames, diagnostics)`` with numpy values.
    """
    stages = make_stages(config, method)
    archs = _judge_archs(stages)
    host = lambda tree: jax.tree_util.tree_map(np.asarray, tree)
    enhance = jax.jit(stages.enhance)
    detect = jax.jit(stages.detect)
    crop_faces = jax.jit(stages.crop_faces)
    encode = jax.jit(stages.encode)
    embed = {a: jax.jit(lambda p, faces, a=a: stages.embed(p, a, faces)) for a in archs}
    embed_float32 = {a: jax.jit(lambda p, faces, a=a: stages.embed_float32(p, a, faces)) for a in archs}
    perturb = jax.jit(stages.perturb)
    synthesize = jax.jit(stages.synthesize)
    attenuate = jax.jit(stages.attenuate)
    similarities = jax.jit(stages.similarities)
    release = jax.jit(stages.release, static_argnums=(2,))
    found = jax.jit(stages.found)

    def staged(params, x_lowlight, key, threshold=None):
        threshold = stages.threshold if threshold is None else float(threshold)
        x_lowlight = np.asarray(x_lowlight, np.float32)
        frames_in = host(enhance(params, x_lowlight))
        boxes, scores, second_scores = host(detect(params, frames_in))
        original_faces, input_faces = host(crop_faces(frames_in, x_lowlight, boxes))
        initial_latents = host(encode(params, original_faces))
        references = np.stack([host(embed[a](params, original_faces)) for a in archs])
        level = host(mean_luminance(input_faces))
        batch = x_lowlight.shape[0]
        detected = host(found(boxes, scores, second_scores))
        done = ~detected
        latents = initial_latents
        iterations = np.zeros((batch,), np.int32)
        sims_now = np.full((batch, len(archs)), np.nan, np.float32)
        synthesized_now = np.zeros_like(original_faces)
        private_now = np.zeros_like(original_faces)

        def judge(synthesized, private, embed=embed, refs=references):
            if stages.judge_both_views:
                both = np.concatenate([private, synthesized])
                embeddings = np.stack([host(embed[a](params, both)) for a in archs])
                return np.maximum(host(similarities(embeddings[:, :batch], refs)),
                                  host(similarities(embeddings[:, batch:], refs)))
            return host(similarities(np.stack([host(embed[a](params, private)) for a in archs]), refs))

        for k in range(stages.max_iters):
            if done.all():
                break
            active = ~done
            latents = host(perturb(latents, key, k, active))
            synthesized = host(synthesize(params, latents))
            private = host(attenuate(params, synthesized, level))
            sims = judge(synthesized, private)
            with np.errstate(invalid="ignore"):
                rejected_by_all = np.all(sims < threshold, axis=1)
            sims_now = np.where(active[:, None], sims, sims_now)
            synthesized_now = np.where(active[:, None, None, None], synthesized, synthesized_now)
            private_now = np.where(active[:, None, None, None], private, private_now)
            iterations = iterations + active.astype(np.int32)
            done = done | (active & rejected_by_all)
        final_sims, judge_refs, judge_embed = sims_now, references, stages.embed
        if stages.rejudge_float32:
            judge_refs = np.stack([host(embed_float32[a](params, original_faces)) for a in archs])
            exact = judge(synthesized_now, private_now, embed=embed_float32, refs=judge_refs)
            final_sims = np.where(np.isnan(sims_now), np.nan, exact).astype(np.float32)
            judge_embed = stages.embed_float32
        frames, flags = host(release(params, params, judge_embed, x_lowlight, boxes, scores,
                                     second_scores, private_now, input_faces, judge_refs, final_sims,
                                     np.float32(threshold)))
        diagnostics = {"iterations": iterations, "loop_similarities": sims_now,
                       "box": boxes, "score": scores, "second_score": second_scores,
                       **flags, "original_faces": original_faces, "input_faces": input_faces,
                       "synthesized_faces": synthesized_now, "private_faces": private_now,
                       "initial_latents": initial_latents, "latents": latents}
        return frames, diagnostics

    staged.judges = archs
    staged.method = method
    return staged


# --------------------------------------------------------------------------- data parallel


def make_jitted_private_step(config, method: str = "ours", num_devices: int | None = None) -> Callable:
    """The fused step, jitted and data parallel over every device (or the first `num_devices`).

    The frames are split along the ``data`` mesh axis and the parameters replicated
    (`jaxdeid.train.sharding`); jit partitions the while-loop and the networks, and the
    noise draws do not depend on the partitioning, so the result equals one device's
    (``tests/test_sharding.py``). On one device this is plain ``jax.jit``.

    The returned function also carries ``.jitted`` (the jitted step), ``.mesh`` and
    ``.place(params, x_lowlight)`` (the arguments put on the mesh), so a benchmark can
    place its inputs once and time the step alone.
    """
    step = jax.jit(make_private_step(config, method))
    mesh = data_mesh(num_devices)

    def place(params, x_lowlight):
        return replicate(params, mesh), shard_batch(x_lowlight, mesh)

    def sharded_step(params, x_lowlight, key, threshold=None):
        args = (*place(params, x_lowlight), key)
        return step(*args) if threshold is None else step(*args, threshold)

    sharded_step.jitted = step
    sharded_step.mesh = mesh
    sharded_step.place = place
    return sharded_step
