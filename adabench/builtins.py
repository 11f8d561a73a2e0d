"""Registration of everything adabench ships, by import path (nothing is imported here)."""

from __future__ import annotations

from adabench.registry import GENERATORS, METRICS, POLICIES, SUITES

# --- cache policies ---------------------------------------------------------------
POLICIES.register("ff-anchor", "adabench.baselines.ff_anchor:FirstFrameAnchor",
                  "first frame(s) kept as a permanent sink plus a rolling window")
POLICIES.register("sliding-window", "adabench.baselines.sliding_window:SlidingWindow",
                  "only a rolling window of the most recent frames")
POLICIES.register("adastate", "adabench.adastate:AdaptiveState",
                  "hidden state frame(s) denoised with every chunk, plus a rolling window")

# --- generators (models) ----------------------------------------------------------
GENERATORS.register("panworld-gt", "adabench.world.generator:GroundTruthGenerator",
                    "PanWorld's ground-truth video for the prompt (the reference row)")
GENERATORS.register("panworld-codec", "adabench.world.generator:CodecRoundTripGenerator",
                    "the ground truth through the shipped codec (encode, decode): what the codec alone costs")
GENERATORS.register("ff-anchor", "adabench.models:ff_anchor", "embedded DiT with a first-frame anchor")
GENERATORS.register("sliding-window", "adabench.models:sliding_window", "embedded DiT with a sliding window")
GENERATORS.register("adastate", "adabench.models:adastate", "embedded DiT with AdaState's adaptive state")
GENERATORS.register("base", "adabench.models:base", "embedded DiT before policy fine-tuning (block-causal, 21 frames)")
GENERATORS.register("dit", "adabench.models:dit",
                    "embedded DiT (base weights) under any registered cache policy: dit:policy=NAME,key=value")
GENERATORS.register("wan", "adabench.wan.generator:wan",
                    "Wan2.1 causal family (Self-Forcing, CausVid, LongLive) under any cache policy: "
                    "wan:path=DIR,checkpoint=FILE,preset=NAME,policy=NAME (needs adabench[wan])")

# --- metrics ----------------------------------------------------------------------
METRICS.register("flow", "adabench.metrics.flow_magnitude:FlowMagnitude",
                 "optical-flow magnitude per pair: mean, median, p95, top-5% mean, raw and normalised")
METRICS.register("dynamic-degree", "adabench.metrics.dynamic_degree:DynamicDegree",
                 "VBench dynamic degree, per video and per 2-second clip")
METRICS.register("retention", "adabench.metrics.retention:DynamicsRetention",
                 "flow magnitude of the last window over the first window")
METRICS.register("motion-fidelity", "adabench.metrics.motion_fidelity:MotionFidelity",
                 "measured camera motion against the prompt's true velocity (PanWorld)")
METRICS.register("drift", "adabench.metrics.drift:Drift",
                 "start-end contrast, first-vs-last window and Video Drift Error of a per-frame measure")
METRICS.register("lockin", "adabench.metrics.drift:AnchorLockIn",
                 "similarity of each window to the first frame (anchor lock-in)")
METRICS.register("clip-consistency", "adabench.metrics.learned:ClipConsistency",
                 "VBench-style consistency on CLIP features (needs local weights)")
METRICS.register("lpips", "adabench.metrics.learned:LpipsDistance",
                 "perceptual distance to the first and previous frame (needs local weights)")
METRICS.register("attention", "adabench.metrics.attention:AttentionSinkStats",
                 "attention-sink statistics from the backbone's attention probe (embedded models)")
METRICS.register("throughput", "adabench.metrics.throughput:Throughput",
                 "first-chunk latency, per-chunk latency p50/p95 and trend, steady FPS, real-time factor, memory")
METRICS.register("adherence", "adabench.metrics.adherence:PromptAdherence",
                 "PanWorld evaluator's recognition of the prompt's motion, scene, colour and shape per clip window")
METRICS.register("appearance", "adabench.metrics.appearance:Appearance",
                 "colours, sharpness and PSNR against PanWorld's ground truth (off-palette share, colour distance)")
METRICS.register("frechet", "adabench.metrics.adherence:EvaluatorFrechet",
                 "PanWorld evaluator features per window, for a Frechet distance to ground truth across videos")

# --- prompt suites ----------------------------------------------------------------
SUITES.register("panworld-default", "adabench.world.suites:panworld_default", "16 PanWorld prompts")
SUITES.register("panworld-smoke", "adabench.world.suites:panworld_smoke", "3 PanWorld prompts for CI")
