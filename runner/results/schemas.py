"""One Arrow schema per result kind, with a description on every field.

Rows are produced by ``tasks`` as plain dicts holding the kind's own columns;
``runner/results/store.py`` adds the provenance columns and validates the keys against these
schemas, so a typo in a task's row fails the run instead of producing a silent null column.
Bump ``SCHEMA_VERSION`` when a column changes meaning.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1


def f(name: str, typ: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    """A field whose description sits in the Arrow metadata, so readers of the Parquet see it."""
    return pa.field(name, typ, nullable=nullable, metadata={"description": doc})


STR, I64, F64, BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()

PROVENANCE: list[pa.Field] = [
    f("run_key", STR, "step_id plus the row's discriminator; unique across the store", False),
    f("step_id", STR, "sha256(kind, config, input step_ids, CODE_VERSION)[:16]", False),
    f("config_hash", STR, "sha256 of the step kind and config alone", False),
    f("git_sha", STR, "fprun commit that produced the row ('unknown' outside a git checkout)"),
    f("fprun_version", STR, "fprun package version"),
    f("torch_version", STR, "torch version on the driver"),
    f("transformers_version", STR, "transformers version"),
    f("peft_version", STR, "peft version"),
    f("mergekit_version", STR, "mergekit version (its DARE rescaling changed over time)"),
    f("ray_version", STR, "ray version"),
    f("device", STR, "where the step ran: cpu, cuda:<name>, or e.g. 'ray-train:2xcpu'"),
    f("started_at", pa.timestamp("us", tz="UTC"), "step start (never part of any ID)"),
    f("finished_at", pa.timestamp("us", tz="UTC"), "step end"),
    f("schema_version", pa.int32(), "version of this table's schema"),
    f("datasets", pa.list_(STR), "names of the datasets actually used; stand-ins say so"),
]

PROVENANCE_NAMES = frozenset(fld.name for fld in PROVENANCE)

KIND_FIELDS: dict[str, list[pa.Field]] = {
    "train_run": [
        f("discriminator", STR, "what distinguishes rows of one step (usually 'final')"),
        f("purpose", STR, "fingerprint | finetune | encoder"),
        f("method", STR, "if_sft | if_adapter | full | lora | huref_cnn"),
        f("model_ref", STR, "model trained (zoo name, path or hub id)"),
        f("fingerprint_id", STR, "hash of the key set (never the keys themselves)"),
        f("artifact", STR, "artifact folder of the step"),
        f("dataset", STR, "training data; stand-ins are labelled as such"),
        f("n_train_rows", I64, "training examples"),
        f("epochs", F64, "epochs run"),
        f("steps", I64, "optimizer steps run"),
        f("learning_rate", F64, "peak learning rate"),
        f("global_batch_size", I64, "examples per optimizer step over all workers"),
        f("num_workers", I64, "data-parallel workers"),
        f("strategy", STR, "single | ddp | deepspeed_zero2 | deepspeed_zero3"),
        f("final_loss", F64, "training loss at the last logged step"),
        f("train_seconds", F64, "wall time of training"),
        f("peak_rss_mb", F64, "peak resident memory of the training process"),
        f("trainable_params", I64, "parameters with requires_grad"),
        f("extra", STR, "JSON with method-specific details"),
    ],
    "verification": [
        f("model_ref", STR, "model queried"),
        f("model_step_id", STR, "step that produced the model, if any"),
        f("fingerprint_id", STR, "hash of the key set"),
        f("method", STR, "if_sft | if_adapter"),
        f("condition", STR, "publish | vanilla | publish_w_adapter | tuned_publish | ..."),
        f(
            "probe_set",
            STR,
            "fingerprint | normal | similar | unseen_keys | bos_samples; "
            "'<set>:sampled' for the aggregate of the sampled runs",
        ),
        f("sample_idx", I64, "index of a sampled run; null for greedy and aggregate rows"),
        f("temperature", F64, "0 for greedy"),
        f("n_hit", I64, "generations containing the target"),
        f("n_total", I64, "denominator"),
        f("fsr", F64, "n_hit / n_total, in [0, 1]"),
        f("ci_low", F64, "Clopper-Pearson 95% lower bound"),
        f("ci_high", F64, "Clopper-Pearson 95% upper bound"),
        f("denominator_rule", STR, "fprun (correct) | seed (report_FSR_*.py quirks)"),
        f("prompt_format", STR, "chat_template | seed_vicuna | simple"),
        f("max_new_tokens", I64, "generation budget (target length + margin)"),
        f("n_samples", I64, "sampled runs aggregated (aggregate rows)"),
        f("mean_fsr", F64, "mean FSR over sampled runs (aggregate rows)"),
        f("ttest_threshold", F64, "H0 mean FSR for the t-test (paper: 0.75)"),
        f("p_ttest_two_sided", F64, "scipy ttest_1samp two-sided p (the seed's)"),
        f("p_ttest_one_sided", F64, "one-sided p, H1: mean FSR > threshold (the paper's claim)"),
        f("p_binomial", F64, "exact binomial p of the pooled hits against the null rate"),
        f("binomial_null_rate", F64, "null hit rate of the binomial test"),
        f("dataset", STR, "probe data; stand-ins are labelled as such"),
        f("target", STR, "expected answer y (public; the keys are not)"),
        f(
            "t_statistic",
            F64,
            "one-sample t of the per-run FSRs; +inf when all runs agree above "
            "the threshold (the paper's zero-variance case)",
        ),
        f("seed", I64, "seed of a sampled run (run i uses sampling.seed + i); bos_samples seed"),
    ],
    "huref": [
        f("model_ref", STR, "model whose invariants were extracted"),
        f("artifact", STR, "invariants file"),
        f("arch", STR, "detected architecture family"),
        f("k", I64, "number of selected tokens"),
        f("n_layers", I64, "last layers used"),
        f("token_strategy", STR, "corpus | vocab_rank"),
        f("token_set_hash", STR, "hash of the selected token strings"),
        f("dtype", STR, "compute dtype"),
        f("hidden_size", I64, "model hidden size"),
        f("bytes_read", I64, "checkpoint bytes read"),
        f("seconds", F64, "extraction wall time"),
    ],
    "similarity": [
        f("model_a", STR, "first model"),
        f("model_b", STR, "second model"),
        f("ics", F64, "invariant-terms cosine similarity x 100"),
        f("pcs", F64, "parameter cosine similarity x 100; null across architectures"),
        f("pcs_skipped", I64, "tensors skipped by PCS (name or shape mismatch)"),
        f("k", I64, "tokens per invariant"),
        f("token_set_hash", STR, "token set both invariants used; null when they differ"),
        f(
            "tokens_match",
            BOOL,
            "both invariants used the same token strings (lineage claims "
            "need true; false only for cross-family controls)",
        ),
    ],
    "huref_image": [
        f("model", STR, "model shown (its name in the experiment)"),
        f("png", STR, "the model's picture"),
        f("sheet", STR, "the contact sheet with every model of the step"),
        f("method", STR, "how invariants became a 512-vector: mean_pool | cnn:<encoder>"),
        f("generator", STR, "what drew the picture (fprun's coordinate network or StyleGAN2)"),
        f("feature_cos_to_first", F64, "cosine of the 512-vectors to the first model's"),
        f("ics_to_first", F64, "ICS to the first model; null across token sets"),
        f("k", I64, "tokens per invariant"),
        f("token_set_hash", STR, "token set of the invariants"),
    ],
    "merge_cell": [
        f("pair", STR, "name of the model pair in the grid"),
        f("role", STR, "merged | fingerprinted | expert | base (a parent's baseline row)"),
        f("model_a", STR, "fingerprinted (protected) expert"),
        f("model_b", STR, "other expert"),
        f("base_model", STR, "shared base"),
        f("fingerprint_id", STR, "hash of the fingerprint's key set (never the keys)"),
        f("fingerprint_method", STR, "if_sft | if_adapter"),
        f("merge_method", STR, "mergekit merge_method; 'none' for a parent's baseline"),
        f(
            "params",
            STR,
            "JSON of the canonical cell: every parameter mergekit used, defaults "
            "written out, dtype, device, mergekit version",
        ),
        f("weights", pa.list_(F64), "per-model weights (model_a, model_b); null if unused"),
        f("densities", pa.list_(F64), "per-model densities (model_a, model_b); null if unused"),
        f(
            "weight_fingerprinted",
            F64,
            "model_a's share: its weight (relative when the method "
            "normalises), slerp's t; 1 / 0 for the parents' baselines",
        ),
        f("seed", I64, "mergekit random_seed (random methods only; null otherwise)"),
        f("merge_device", STR, "mergekit's math device (CPU and CUDA draw other DARE masks)"),
        f("status", STR, "ok | failed (the merge or a measurement raised; see error)"),
        f("error", STR, "the exception of a failed cell"),
        f("merged_ref", STR, "kept merged model folder; null when deleted after measuring"),
        f("merged_bytes", I64, "bytes of the merged model on disk"),
        f("untied_head", BOOL, "the merge wrote its own lm_head (config untied to keep it)"),
        f(
            "condition",
            STR,
            "verification condition of fsr: tuned_publish (the merged model "
            "as is) or tuned_w_adapter (IF_adapter: merged embedding + publisher + adapter)",
        ),
        f("fsr", F64, "fingerprint success rate on the keys, greedy"),
        f("fsr_hits", I64, "keys answered with the target"),
        f("fsr_total", I64, "keys queried"),
        f("fsr_ci_low", F64, "Clopper-Pearson 95% lower bound of fsr"),
        f("fsr_ci_high", F64, "Clopper-Pearson 95% upper bound of fsr"),
        f("false_trigger_rate", F64, "unseen random keys (with the hint) answered with the target"),
        f("false_trigger_hits", I64, "unseen keys that triggered"),
        f("false_trigger_total", I64, "unseen keys queried"),
        f("false_trigger_ci_low", F64, "Clopper-Pearson 95% lower bound"),
        f("false_trigger_ci_high", F64, "Clopper-Pearson 95% upper bound"),
        f("normal_triggers", F64, "normal prompts answered with the target"),
        f("verification", STR, "JSON {condition: {probe_set: [hits, total]}}"),
        f("ics_a", F64, "ICS(merged, model_a) x 100"),
        f("ics_b", F64, "ICS(merged, model_b) x 100"),
        f("ics_base", F64, "ICS(merged, base) x 100"),
        f("pcs_a", F64, "PCS(merged, model_a) x 100"),
        f("pcs_b", F64, "PCS(merged, model_b) x 100"),
        f("pcs_base", F64, "PCS(merged, base) x 100"),
        f("refusal_rate", F64, "refusal rate on harmful prompts (MergeGuard's 29 strings)"),
        f("refusal_rate_straight", F64, "the same responses, straight apostrophes also accepted"),
        f("refusal_n", I64, "harmful prompts"),
        f("refusal_ci_low", F64, "Clopper-Pearson 95% lower bound of refusal_rate"),
        f("refusal_ci_high", F64, "Clopper-Pearson 95% upper bound of refusal_rate"),
        f("math_task", STR, "math task (reasoning-gym; stand-ins say so in datasets)"),
        f("math_accuracy", F64, "math accuracy"),
        f("math_n", I64, "math problems"),
        f("math_ci_low", F64, "Clopper-Pearson 95% lower bound of math_accuracy"),
        f("math_ci_high", F64, "Clopper-Pearson 95% upper bound of math_accuracy"),
        f("merge_seconds", F64, "wall time of the merge"),
        f("huref_seconds", F64, "wall time of invariants, ICS and PCS"),
        f("eval_seconds", F64, "wall time of loading, verification and utility evals"),
    ],
    "eval": [
        f("model_ref", STR, "model evaluated"),
        f("model_step_id", STR, "step that produced the model, if any"),
        f("suite", STR, "perplexity | math | refusal | lm_eval"),
        f("task", STR, "task inside the suite"),
        f("metric", STR, "metric name"),
        f("value", F64, "metric value"),
        f("n", I64, "items evaluated"),
        f("ci_low", F64, "95% interval lower bound, where defined"),
        f("ci_high", F64, "95% interval upper bound, where defined"),
        f("dataset", STR, "data; stand-ins are labelled as such"),
        f(
            "extra",
            STR,
            "JSON of the settings behind the number (prompt format, sampling, "
            "extraction rule, refusal scope, chunking)",
        ),
    ],
    "sweep_trial": [
        f("sweep", STR, "sweep name"),
        f(
            "trial_id",
            STR,
            "stable trial id: hash of the sweep name and the trial's step IDs "
            "(the same on re-runs and restores; Ray's own id is tune_trial_id)",
        ),
        f("params", STR, "JSON of the sampled hyperparameters"),
        f("status", STR, "TERMINATED (every phase ran) | STOPPED (by the scheduler) | ERROR"),
        f("metric", STR, "optimised metric name"),
        f("value", F64, "optimised metric value (null unless the trial reported it)"),
        f("metrics", STR, "JSON of all reported metrics"),
        f("sweep_id", STR, "hash of the sweep config; Tune's experiment is ARTIFACTS/tune/<id>"),
        f("tune_trial_id", STR, "Ray Tune's trial id in that experiment"),
    ],
    "provenance_pair": [
        f("owner", STR, "owner name: whose fingerprint and model the suspect is tested against"),
        f("owner_model", STR, "the owner's published (fingerprinted) model"),
        f("fingerprint_id", STR, "hash of the owner's key set (never the keys)"),
        f("fingerprint_method", STR, "if_sft | if_adapter"),
        f("suspect", STR, "suspect model label"),
        f("relation", STR, "derived (made from the owner's model) | independent (pool)"),
        f(
            "family",
            STR,
            "none | quantize | prune | noise | permute_rotate | finetune | merge | independent",
        ),
        f("strength", F64, "the family's knob: bits, sparsity, noise scale, merge weight, steps"),
        f("seed", I64, "seed of the transformation or pool member"),
        f("params", STR, "JSON of the transformation, merge cell or pool member"),
        f("transform_library", STR, "library that made the suspect (torchao, torch, mergekit)"),
        f("status", STR, "ok | failed (the suspect could not be built; see error)"),
        f("error", STR, "why the pair failed"),
        f("not_applicable", STR, "JSON {detector: reason} for detectors that could not score it"),
        f("condition", STR, "verification condition: tuned_publish | tuned_w_adapter (IF_adapter)"),
        f("if_fsr", F64, "IF key FSR, greedy"),
        f("if_fsr_hits", I64, "keys answered with the target, greedy"),
        f("if_fsr_total", I64, "keys queried"),
        f("false_trigger_rate", F64, "unseen hinted keys answered with the target, greedy"),
        f("false_trigger_hits", I64, "unseen keys that triggered"),
        f("false_trigger_total", I64, "unseen keys queried"),
        f("if_sampled_fsr", F64, "mean key FSR over the sampled runs"),
        f("sampled_false_trigger_rate", F64, "unseen-key trigger rate pooled over sampled runs"),
        f("if_p_binomial", F64, "exact binomial p of the sampled key hits against the null rate"),
        f("if_sampled", F64, "-log10 if_p_binomial: the sampled detector's score"),
        f("ics", F64, "HuRef ICS x 100 to the owner's model"),
        f("pcs", F64, "PCS x 100 to the owner's model; null across architectures"),
        f("tokens_match", BOOL, "ICS used the owner's token set (false: the suspect's own)"),
        f("build_seconds", F64, "wall time of making the suspect"),
        f("huref_seconds", F64, "wall time of invariants, ICS and PCS"),
        f("verify_seconds", F64, "wall time of loading and querying the suspect"),
    ],
    "detector_score": [
        f("owner", STR, "owner name"),
        f("fingerprint_method", STR, "the owner's IF method"),
        f("detector", STR, "if_fsr | if_sampled | huref_ics | huref_pcs"),
        f("family", STR, "derived pairs scored: all, or one transformation family"),
        f("strength", F64, "one strength of the family; null for all strengths"),
        f("n_derived", I64, "derived pairs with a score (positives)"),
        f("n_independent", I64, "independent pool pairs with a score (negatives)"),
        f("n_not_applicable", I64, "pairs the detector could not score (reasons in the pairs)"),
        f("n_failed", I64, "derived pairs whose suspect could not be built"),
        f("auc", F64, "ROC AUC: P(derived scores above independent), ties one half"),
        f("auc_low", F64, "95% stratified bootstrap lower bound"),
        f("auc_high", F64, "95% stratified bootstrap upper bound"),
        f("auc_why_not", STR, "why the AUC is not estimable"),
        f("tpr_at_1pct", F64, "TPR at 1% FPR, threshold calibrated on the pool"),
        f("tpr_at_1pct_low", F64, "95% bootstrap lower bound"),
        f("tpr_at_1pct_high", F64, "95% bootstrap upper bound"),
        f("tpr_at_1pct_why_not", STR, "'not estimable: ...' when the pool is under 100 pairs"),
        f("tpr_at_01pct", F64, "TPR at 0.1% FPR"),
        f("tpr_at_01pct_low", F64, "95% bootstrap lower bound"),
        f("tpr_at_01pct_high", F64, "95% bootstrap upper bound"),
        f("tpr_at_01pct_why_not", STR, "'not estimable: ...' when the pool is under 1000 pairs"),
        f("tprs", STR, "JSON {fpr: {value, low, high, why_not}} at every configured FPR"),
        f("threshold_zero_fp", F64, "the pool's highest score"),
        f("tpr_zero_fp", F64, "share of derived pairs above every pool pair (no false positive)"),
        f("survives", BOOL, "tpr_zero_fp reaches the configured survive_tpr"),
        f("unseen_trigger_rate", F64, "IF: mean unseen-key trigger rate of the derived pairs"),
        f("unseen_trigger_rate_pool", F64, "IF: the same on the pool"),
    ],
}

DISCRIMINATORS: dict[str, tuple[str, ...]] = {
    # columns whose values, joined to step_id, make run_key
    "train_run": ("discriminator",),
    "verification": ("condition", "probe_set", "sample_idx"),
    "huref": ("model_ref",),
    "similarity": ("model_a", "model_b"),
    "huref_image": ("model",),
    "merge_cell": ("merge_method", "weights", "densities", "seed"),
    "eval": ("suite", "task", "metric"),
    "sweep_trial": ("trial_id",),
    "provenance_pair": ("suspect",),
    "detector_score": ("owner", "detector", "family", "strength"),
}


def schema_for(kind: str) -> pa.Schema:
    """The full schema (provenance first) of a result kind."""
    if kind not in KIND_FIELDS:
        raise KeyError(f"unknown result kind {kind!r}; known: {sorted(KIND_FIELDS)}")
    return pa.schema(PROVENANCE + KIND_FIELDS[kind], metadata={"kind": kind})
