"""CLI bad-input cases, second half (..., results, merge, report); see test_bad_inputs.py."""

# (case id, command line, a part of the expected error line). {t}: the inputs folder; {r}, {a},
# {o}: this case's results, artifacts and output paths (none of which may exist afterwards);
# @r: --results {r} --artifacts {a}; @sft, @sweep: the smoke IF_SFT and sweep configs.
CASES: list[tuple[str, str, str]] = [
    (
        "verify-samples-range",
        "verify --model {t}/model --fingerprint {t}/fp --samples -1 @r",
        "--samples -1",
    ),
    (
        "verify-temperature-range",
        "verify --model {t}/model --fingerprint {t}/fp --temperature 0 @r",
        "allowed: > 0",
    ),
    (
        "verify-probe-set",
        "verify --model {t}/model --fingerprint {t}/fp --set probe_sets=[fingerprnt] @r",
        "unknown probe set 'fingerprnt'",
    ),
    (
        "verify-no-private",
        "verify --model {t}/model --fingerprint {t}/adir @r",
        "no private/",
    ),
    (
        "verify-unknown-model",
        "verify --model tiny-lama --fingerprint {t}/fp @r",
        "did you mean tiny-llama?",
    ),
    # eval
    (
        "eval-corrupt-checkpoint",
        "eval --model {t}/corrupt --suite math @r",
        "safetensors",
    ),
    (
        "eval-suite",
        "eval --model {t}/model --suite vibes @r",
        "--suite vibes",
    ),
    (
        "eval-batch-range",
        "eval --model {t}/model --suite math --set batch_size=0 @r",
        "allowed: >= 1",
    ),
    (
        "eval-empty-folder",
        "eval --model {t}/adir --suite math @r",
        "has no config.json",
    ),
    # huref extract
    (
        "extract-device",
        "huref extract --model {t}/model --device tpu @r",
        "--device tpu",
    ),
    (
        "extract-k-range",
        "huref extract --model {t}/model --k 1 @r",
        "allowed: >= 2",
    ),
    (
        "extract-token-file-missing",
        "huref extract --model {t}/model --tokens file @r",
        "--token-file",
    ),
    (
        "extract-token-file-absent",
        "huref extract --model {t}/model --tokens file --token-file {t}/nope.txt @r",
        "--token-file",
    ),
    (
        "extract-pickle",
        "huref extract --model {t}/pickled @r",
        "pickle checkpoint",
    ),
    (
        "extract-corrupt",
        "huref extract --model {t}/corrupt @r",
        "safetensors",
    ),
    (
        "extract-out-taken",
        "huref extract --model {t}/model --out {t}/occupied @r",
        "already exists",
    ),
    # huref compare
    (
        "compare-chunk-range",
        "huref compare {t}/inv4 {t}/inv4b --chunk-mb 0 @r",
        "--chunk-mb 0",
    ),
    (
        "compare-different-k",
        "huref compare {t}/inv4 {t}/inv8 --no-pcs @r",
        "different k",
    ),
    (
        "compare-corrupt",
        "huref compare {t}/inv4 {t}/inv_cut --no-pcs @r",
        "truncated or corrupt",
    ),
    (
        "compare-one-folder",
        "huref compare {t}/inv4 @r",
        "at least two",
    ),
    (
        "compare-out-unwritable",
        "huref compare {t}/inv4 {t}/inv4b --no-pcs --out /proc/fprun-out @r",
        "not writable",
    ),
    (
        "compare-pcs-model-gone",
        "huref compare {t}/inv4 {t}/inv4b @r",
        "--no-pcs",
    ),
    # huref image, train-encoder
    (
        "image-different-k",
        "huref image {t}/inv4 {t}/inv8 --out {o}",
        "different k",
    ),
    (
        "image-size-range",
        "huref image {t}/inv4 --size 4 --out {o}",
        "use 8 to 2048",
    ),
    (
        "image-out-taken",
        "huref image {t}/inv4 --out {t}/occupied",
        "already exists",
    ),
    (
        "train-encoder-set-type",
        "huref train-encoder --out {o} --set tokens=many @r",
        "--set tokens=many",
    ),
    (
        "train-encoder-config-not-utf8",
        "huref train-encoder --out {o} --config {t}/latin1.yaml @r",
        "not valid UTF-8",
    ),
    # results
    (
        "show-limit-range",
        "results show --limit -1 --results {r}",
        "use a value >= 0",
    ),
    (
        "show-missing-results",
        "results show --results {r}",
        "does not exist",
    ),
    (
        "show-unknown-kind",
        "results show --kind verifcation --results {r}",
        "unknown result kind",
    ),
    (
        "export-out-is-a-folder",
        "results export --kind eval --out {t}/adir --results {t}/store",
        "is a folder",
    ),
    (
        "export-out-exists",
        "results export --kind eval --out {t}/afile --results {t}/store",
        "already exists",
    ),
    (
        "export-format",
        "results export --kind eval --format xls --out {o} --results {t}/store",
        "--format xls",
    ),
    (
        "export-out-under-a-file",
        "results export --kind eval --out {t}/afile/x.csv --results {t}/store",
        "is a file, not a folder",
    ),
    # merge: the YAML, --model, flags and --out before any model is read
    (
        "merge-missing-config",
        "merge {t}/nope.yml --out {o} @r",
        "does not exist",
    ),
    (
        "merge-model-not-name-ref",
        "merge {t}/m.yml --out {o} --model base @r",
        "expected NAME=REF",
    ),
    (
        "merge-missing-model",
        "merge {t}/m.yml --out {o} @r",
        "does not exist",
    ),
    (
        "merge-set-typo",
        "merge {t}/m.yml --out {o} --set sed=1 @r",
        "did you mean 'seed'?",
    ),
    (
        "merge-shard-range",
        "merge {t}/m.yml --out {o} --shard-mb 0 @r",
        "--shard-mb 0",
    ),
    (
        "merge-out-taken",
        "merge {t}/m.yml --out {t}/occupied @r",
        "already exists",
    ),
    (
        "merge-local-and-address",
        "merge {t}/m.yml --out {o} --local --address auto @r",
        "exclude each other",
    ),
    # report: a store that holds results, an --out it may write
    (
        "report-no-results",
        "report {t}/store --out {o}",
        "no result tables",
    ),
    (
        "report-out-taken",
        "report {t}/store --out {t}/occupied",
        "already exists",
    ),
]
