"""CLI bad-input cases, first half (validate, run, sweep, demo, ...); see test_bad_inputs.py."""

# (case id, command line, a part of the expected error line). {t}: the inputs folder; {r}, {a},
# {o}: this case's results, artifacts and output paths (none of which may exist afterwards);
# @r: --results {r} --artifacts {a}; @sft, @sweep: the smoke IF_SFT and sweep configs.
CASES: list[tuple[str, str, str]] = [
    # validate: every file read, every problem named
    (
        "validate-not-utf8",
        "validate {t}/latin1.yaml",
        "not valid UTF-8 (line 2",
    ),
    (
        "validate-yaml-syntax",
        "validate {t}/syntax.yaml",
        "not valid YAML at line 3",
    ),
    (
        "validate-folder",
        "validate {t}/adir",
        "is a folder, not a file",
    ),
    (
        "validate-missing",
        "validate {t}/nope.yaml",
        "does not exist",
    ),
    (
        "validate-unknown-model",
        "validate {t}/lama.yaml",
        "did you mean tiny-llama?",
    ),
    (
        "validate-misspelled-key",
        "validate {t}/misspelled.yaml",
        "did you mean 'lr'?",
    ),
    (
        "validate-range",
        "validate {t}/range.yaml",
        "allowed: > 0",
    ),
    (
        "validate-finetune-data-missing",
        "validate {t}/ft_data.yaml",
        "data file nope/train.jsonl does not exist",
    ),
    (
        "validate-not-a-mapping",
        "validate {t}/list.yaml",
        "does not hold a mapping",
    ),
    # run
    (
        "run-set-not-yaml",
        "run @sft --local --set train.lr=[ @r",
        "not valid YAML",
    ),
    (
        "run-set-wrong-type",
        "run @sft --local --set train.lr=abc @r",
        "--set train.lr=abc",
    ),
    (
        "run-set-unknown-key",
        "run @sft --local --set trian.lr=1 @r",
        "unknown key 'trian'",
    ),
    (
        "run-set-not-key-value",
        "run @sft --local --set novalue @r",
        "is not key=value",
    ),
    (
        "run-local-and-address",
        "run @sft --local --address auto @r",
        "exclude each other",
    ),
    (
        "run-results-is-a-file",
        "run @sft --local --results {t}/afile --artifacts {a}",
        "is a file",
    ),
    (
        "run-missing-model-path",
        "run @sft --local --set model=/no/such/model @r",
        "does not exist",
    ),
    (
        "run-dry-run-unknown-model",
        "run {t}/lama.yaml --dry-run @r",
        "unknown model tiny-lama",
    ),
    (
        "run-not-utf8",
        "run {t}/latin1.yaml --local @r",
        "not valid UTF-8",
    ),
    (
        "run-a-sweep",
        "run @sweep --local @r",
        "fprun sweep",
    ),
    (
        "run-unknown-option",
        "run @sft --bogus",
        "No such option",
    ),
    (
        "run-missing-argument",
        "run",
        "Missing argument",
    ),
    # sweep, demo, ls
    (
        "sweep-not-a-sweep",
        "sweep @sft --dry-run @r",
        "not a sweep",
    ),
    (
        "sweep-empty-grid",
        "sweep @sweep --dry-run --set search.0.grid=[] @r",
        "--set search.0.grid=[]",
    ),
    (
        "sweep-not-utf8",
        "sweep {t}/latin1.yaml --dry-run @r",
        "not valid UTF-8",
    ),
    (
        "demo-local-and-address",
        "demo --local --address auto --out {o}",
        "exclude each other",
    ),
    (
        "ls-unknown",
        "ls gadgets",
        "cannot list 'gadgets'",
    ),
    (
        "unknown-verb",
        "frobnicate",
        "No such command",
    ),
    # zoo get
    (
        "zoo-unknown-name",
        "zoo get tiny-lama --out {o}",
        "did you mean tiny-llama?",
    ),
    (
        "zoo-out-taken",
        "zoo get tiny-llama --out {t}/occupied",
        "already exists",
    ),
    (
        "zoo-out-under-a-file",
        "zoo get tiny-llama --out {t}/afile/x",
        "is a file, not a folder",
    ),
    (
        "zoo-out-unwritable",
        "zoo get tiny-llama --out /proc/fprun-out",
        "not writable",
    ),
    # fingerprint
    (
        "fingerprint-method",
        "fingerprint --method if_sfd --model tiny-llama --out {o} @r",
        "--method if_sfd",
    ),
    (
        "fingerprint-unknown-model",
        "fingerprint --method if_sft --model tiny-lama --out {o} --local @r",
        "did you mean tiny-llama?",
    ),
    (
        "fingerprint-out-taken",
        "fingerprint --method if_sft --model tiny-llama --out {t}/occupied @r",
        "already exists",
    ),
    (
        "fingerprint-set-type",
        "fingerprint --method if_sft --model tiny-llama --out {o} --set train.epochs=many @r",
        "--set train.epochs=many",
    ),
    # finetune
    (
        "finetune-data-not-utf8",
        "finetune --model {t}/model --data {t}/latin1.jsonl --out {o} @r",
        "not valid UTF-8 (line 2",
    ),
    (
        "finetune-data-bad-line",
        "finetune --model {t}/model --data {t}/badline.jsonl --out {o} @r",
        "line 2 is not JSON",
    ),
    (
        "finetune-old-lr-name",
        "finetune --model {t}/model --data {t}/good.jsonl --out {o} --set learning_rate=1e-4 @r",
        "did you mean 'lr'?",
    ),
    (
        "finetune-lr-range",
        "finetune --model {t}/model --data {t}/good.jsonl --out {o} --set lr=-1 @r",
        "allowed: > 0",
    ),
    (
        "finetune-pickle",
        "finetune --model {t}/pickled --data {t}/good.jsonl --out {o} @r",
        "pass --allow-pickle",
    ),
    (
        "finetune-local-and-address",
        "finetune --model {t}/model --data {t}/good.jsonl --out {o} --local --address auto @r",
        "exclude each other",
    ),
    (
        "finetune-out-is-a-file",
        "finetune --model {t}/model --data {t}/good.jsonl --out {t}/afile @r",
        "already exists",
    ),
    # verify
    (
        "verify-condition",
        "verify --model {t}/model --fingerprint {t}/fp --condition bogus @r",
        "--condition bogus is not a condition",
    ),
]
