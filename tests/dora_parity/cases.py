"""The inputs of the Dora parity checks, generated deterministically.

Pure Python (no Dora, no adora): `record_dora_sigs.py` imports it in Dora's
venv, `tests/test_dora_parity.py` in adora's. The recorded golden file keeps
the argvs themselves, so the parity test only needs the generators to rebuild
the `value_to_argv` inputs (Python objects, e.g. tuples, that JSON cannot hold)
and to check that the golden file is up to date with this module.
"""

import random
from pathlib import PurePosixPath

SEED = 20240613
N_RANDOM_ARGPARSE = 1200
N_RANDOM_HYDRA = 90
#: Random override lists over the second pool (more groups: optional, packages, presets).
N_RANDOM_HYDRA_GROUPS = 160

# -- argparse ----------------------------------------------------------------

_STRINGS = ["base", "hello world", "héllo", "a=b", "x=y=z", "", "日本語", "with 'quote'",
            'dq"x', " lead", "trail ", "--", "0.10", "None", "ünï cödé=✓"]
_FLOATS = ["0.1", "0.10", "0.100", "1e-1", "0.01", "1e-3", "0.001", "1E-3", "-0.5", "2",
           "3.0", ".5", "-1e-3", "1e3", "inf", "-0.0", "nan"]


def _pick(rng, values):
    return [rng.choice(values)]


def _ints(rng, low=1, high=4, pool=("1", "2", "3", "4", "-2", "02")):
    return [rng.choice(pool) for _ in range(rng.randint(low, high))]


#: (option string, how it takes values) for every optional argument of
#: `aproj.parser_def.build_parser`. ``None``: a flag without value.
_OPTIONS = [
    ("--lr", lambda r: _pick(r, _FLOATS)),
    ("--wd", lambda r: _pick(r, ["1e-4", "0.0001", "1e-5", "0", "-0.0", "0.0", "1.0e-4"])),
    ("--momentum", lambda r: _pick(r, ["0.9", "0", "0.99", "0.90"])),
    ("--scale", lambda r: _pick(r, ["0.5", "0.25", "1", ".5"])),
    ("--epochs", lambda r: _pick(r, ["10", "010", "5", "-1", "0", "100", "+10"])),
    ("--batch_size", lambda r: _pick(r, ["32", "64", "+32", "0032", "1"])),
    ("--offset", lambda r: _pick(r, ["-3", "-5", "3", "0", "-03"])),
    ("--seed", lambda r: _pick(r, ["0", "42", "-1", "7"])),
    ("--name", lambda r: _pick(r, _STRINGS)),
    ("--note", lambda r: _pick(r, _STRINGS + ["-", "-x", "--y"])),
    ("--optim", lambda r: _pick(r, ["sgd", "adam", "adamw", "adam"])),
    ("--depth", lambda r: _pick(r, ["18", "34", "50", "018"])),
    ("--amp", None),
    ("--no_shuffle", None),
    ("-v", None),
    ("--verbose", None),
    ("--layers", lambda r: _ints(r)),
    ("--tags", lambda r: [r.choice(["x", "y", "a b", "é", "k=v", "x"])
                          for _ in range(r.randint(1, 3))]),
    ("--milestones", lambda r: _ints(r, low=0, high=3)),
    ("--num_workers", lambda r: _pick(r, ["4", "8", "0"])),
    ("--log_every", lambda r: _pick(r, ["100", "10"])),
    ("--log_dir", lambda r: _pick(r, ["logs", "/tmp/l", "a b"])),
    ("--cache_dir", lambda r: _pick(r, ["/tmp/cache", "/c"])),
    ("--x_extra", lambda r: _pick(r, ["0", "1"])),
    ("--z_extra", lambda r: _pick(r, ["0", "1"])),
    ("--debug-level", lambda r: _pick(r, ["0", "2"])),
    ("--batch", lambda r: _pick(r, ["16", "32"])),  # abbreviation of --batch_size
    ("--mom", lambda r: _pick(r, ["0.5"])),  # abbreviation of --momentum
]
_POSITIONALS = ["cifar", "imagenet", "mnist", "a b", "-", "=x"]
_LIST_OPTIONS = {"--layers", "--tags", "--milestones"}


def _render(rng, option, values):
    if values is None:
        if option == "-v" and rng.random() < 0.3:
            return ["-vv"]
        return [option]
    if option in _LIST_OPTIONS or not values:
        return [option, *values]
    value = values[0]
    # A value starting with "-" that is not a number would be taken for an
    # option: give it with "=" (what users have to do too).
    risky = value.startswith("-") and not _is_number(value)
    if risky or value == "" or rng.random() < 0.4:
        return [f"{option}={value}"]
    return [option, value]


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def argparse_cases():
    """Every argv of the argparse project: hand-written ones, then random ones."""
    cases = [
        [],
        ["cifar"],  # positional set to its default
        ["imagenet"],
        ["--lr", "0.1"], ["--lr=0.10"], ["--lr", "1e-1"], ["--lr", "0.01"],
        ["--wd", "0.0001"], ["--wd", "1e-4"],
        ["--scale", "0.5"],  # the default is the *string* "0.5": always in the delta
        ["--momentum", "0.9"], ["--seed", "0"], ["--note", "hi"],
        ["--epochs", "10"], ["--epochs", "010"], ["--batch_size", "32"], ["--offset", "-3"],
        ["--name", "base"], ["--optim", "sgd"], ["--depth", "18"],
        ["--layers", "2", "2"], ["--layers", "2"], ["--tags", "x"], ["--milestones"],
        ["--amp"], ["--no_shuffle"], ["-v"], ["-vv"], ["-v", "--verbose", "-v"],
        ["--num_workers", "8"], ["--log_every", "1"], ["--log_dir", "x"],
        ["--cache_dir", "/c"], ["--x_extra", "1"], ["--z_extra", "1"],
        ["--debug-level", "2"],
        ["--lr", "0.5", "--lr", "0.1"],  # repeated: the last one wins
        ["--name", "hello world", "--tags", "a b", "é", "--", "mnist"],
        ["--name=a=b", "--note=", "--lr=-1e-3"],
        ["--batch", "64"], ["--mom", "0.5"],
        # argparse refuses these: both tools must refuse them too.
        ["--optim", "rmsprop"], ["--depth", "51"], ["--lr", "abc"], ["--unknown", "1"],
        ["--layers"], ["--no", "1"], ["a", "b"],
    ]
    rng = random.Random(SEED)
    for _ in range(N_RANDOM_ARGPARSE):
        argv = []
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 8])):
            option, gen = rng.choice(_OPTIONS)
            argv += _render(rng, option, None if gen is None else gen(rng))
        roll = rng.random()
        if roll < 0.1:
            argv = [rng.choice(_POSITIONALS[:4]), *argv]
        elif roll < 0.15:
            argv += ["--", rng.choice(_POSITIONALS)]
        cases.append(argv)
    return cases


# -- Hydra -------------------------------------------------------------------

_HYDRA_POOL = [
    "model=small", "model=big", "optim=sgd", "optim=adam", "data=default", "data=large",
    "data/aug=none", "data/aug=strong",
    "model.hidden=128", "model.hidden=64", "model.dropout=0.10", "model.dropout=0.1",
    "model.dropout=1e-1", "model.act=tanh", "optim.lr=1e-3", "optim.lr=0.001", "optim.lr=0.1",
    "epochs=20", "epochs=10", "seed=0", "seed=42", "total_steps=5",
    'name="hello world"', "name='a=b'", "name='héllo'", "name=base run", "note=null",
    "note=text", "note=1", "note=true", "note='1'",
    "tags=[c,d]", "tags=[]", "tags=[a,b]", "tags=[a, b]", "tags=[1, 2.5, null, x y]",
    "mapping.alpha=2", "mapping.alpha=1", "mapping.beta.delta=[3]", "mapping={alpha: 2}",
    "mapping.beta={gamma: 3, delta: []}", "mapping.beta.gamma=2",
    "+new.key=3", "+new.list=[1,2]", "+extra={x: 1, y: [1, 2], z: {w: null}}", "++seed=7",
    "++fresh=1", "+flag=true",
    "num_workers=8", "logging.level=debug", "logging.every=1", "dora.dir=elsewhere",
    "slurm.gpus=8", "data.aug.crop=4", "data.batch_size=64", "data.path=/x/y",
    "optim.momentum=0.5",
]


#: The second pool: the groups added for issue 13 (optional `sched`/`extras`, `loss`
#: under the package `criterion`, global `preset`s), deletions, dict values on a
#: group key, interpolations, and the forms adora's fast path declines. Deleting a
#: key of the reference config (``~note``) is an error in Dora (its comparison finds
#: the key missing): such cases are hand-written, not drawn at random.
_HYDRA_POOL_GROUPS = [
    "sched=step", "sched=cosine", "~sched", "extras=heavy", "extras=light",
    "+preset=fast", "+preset=long", "preset=fast", "loss@criterion=l1", "loss@criterion=ce",
    "model=big", "optim=adam", "data=large", "data/aug=strong",
    "sched.total=3", "sched.total=${seed}", "sched.warmup=2", "sched.gamma=0.1",
    "criterion.smoothing=0.1", "criterion.reduction=none", "criterion.weight=1",
    "derived.steps_per_epoch=50", "derived.label=x", "seed=7", "epochs=5", "epochs=10",
    "optim.lr=0.5", "optim={lr: 0.2}", "model={hidden: 3}", "+model.act2=elu", "++model.act=silu",
    "+extra.tag=t1", "+extra={a: [1, {b: 2}]}", "tags=[${seed}, x]", "name=run-${epochs}",
    "hydra.job.name=other", "hydra.verbose=true", "hydra/job_logging=disabled",
    "logging.every=2", "num_workers=0",
]


def _hydra_group_cases():
    cases = [
        ["sched=step"], ["sched=cosine"], ["~sched"], ["~sched=cosine"], ["sched=null"],
        ["extras=heavy"], ["extras=light", "extras.workers=3"], ["extras=heavy", "~extras.pin"],
        ["+preset=fast"], ["+preset=long", "epochs=7"], ["preset=fast"], ["preset=long"],
        ["loss@criterion=l1"], ["loss@criterion=l1", "criterion.smoothing=0.2"],
        ["criterion.weight=3"], ["criterion.reduction=none"], ["seed=3"],
        ["sched=step", "sched.milestones=[1]"], ["sched.total=${seed}"], ["sched.lr_min=1"],
        ["optim=adam", "sched=step", "loss@criterion=l1", "extras=heavy", "data=large",
         "model=big"],
        ["optim={lr: 0.2}"], ["optim={lr: 0.2}", "optim=adam"], ["model={hidden: 3}"],
        ["~note"], ["~tags"], ["~mapping.beta"], ["~mapping.beta.gamma"], ["~seed=42"],
        ["~model.act"], ["model=big", "~model.extra"], ["+model.act2=elu"], ["++model.act=silu"],
        ["++model.act2=silu"], ["+extra={a: [1, {b: 2}]}"], ["tags=[${seed}, x]"],
        ["name=run-${epochs}"], ["derived.label=${name}"], ["derived.steps_per_epoch=7"],
        ["+derived.new=${derived.total}"],
        # Declined by adora's fast path (a full compose answers): hydra overrides.
        ["hydra.job.name=other"], ["hydra.verbose=true", "seed=1"],
        ["hydra/job_logging=disabled"], ["hydra/job_logging=disabled", "optim=adam"],
        # Both tools must refuse these.
        ["seed=1,2"], ["sched=step,cosine"], ["~nokey"], ["~seed=1"], ["+model.act=x"],
        ["loss=l1"], ["sched=nope"], ["extras=default"], ["++sched=step"], ["a=["],
        ["model@enc=big"], ["criterion.nokey=1"], ["+preset=nope"], ["optim.lr=abc"],
    ]
    rng = random.Random(SEED + 2)
    for _ in range(N_RANDOM_HYDRA_GROUPS):
        count = rng.choice([1, 2, 3, 3, 4, 5, 6])
        cases.append([rng.choice(_HYDRA_POOL_GROUPS) for _ in range(count)])
    return cases


def hydra_cases():
    """Every override list of the Hydra project: hand-written ones, then random ones."""
    cases = [
        [],
        ["model=small"],  # a group set to its default value is in the delta
        ["model=big"], ["optim=adam"], ["data=large"], ["data/aug=strong"],
        ["data=large", "data/aug=none"],
        ["model=big", "model.hidden=3"],  # group and leaf together
        ["model.hidden=3", "model=big"],
        ["model=big", "model.extra.heads=4"],
        ["optim=adam", "optim.lr=0.01", "optim.betas=[0.5,0.9]"],
        ["epochs=20"], ["epochs=10"], ["total_steps=3"], ["epochs=3", "total_steps=${epochs}"],
        ["optim.lr=0.10"], ["optim.lr=0.1"], ["optim.lr=1e-1"],
        ["name=hello"], ['name="hello world"'], ["name='a=b'"], ["name='日本語'"],
        ["note=null"], ["note=null", "note=5"],
        ["tags=[c,d]"], ["tags=[]"], ["tags=[a,b]"],
        ["mapping={alpha: 5}"], ["mapping.beta.delta=[]"], ["mapping.beta={gamma: 1}"],
        ["+new.key=3"], ["+new.key=3", "+new.key=4"], ["+new={a: 1, b: [1, 2]}"],
        ["+new={b: 1, a: 2}"],  # dict key order is kept, and enters the signature
        ["+a.b.c=1", "+a.b.d=[x]"], ["++fresh=2"], ["++epochs=11"],
        ["seed=1", "seed=2", "seed=3"],  # repeated keys: the last one wins
        ["model=big", "model=small"],
        ["num_workers=1"], ["logging.every=3", "logging.level=x"],
        ["dora.dir=elsewhere"], ["slurm.gpus=8"], ["dora.exclude=[]"],
        ["data.aug.crop=4"], ["data=large", "data.aug.mixup=0.5"],
        # Both tools must refuse these.
        ["model.extra.heads=4"], ["nokey=1"], ["epochs"], ["model=huge"], ["+epochs=3"],
        ["name=日本語"],  # Hydra wants non-ASCII strings quoted
    ]
    rng = random.Random(SEED + 1)
    for _ in range(N_RANDOM_HYDRA):
        argv = [rng.choice(_HYDRA_POOL) for _ in range(rng.choice([1, 2, 2, 3, 3, 4, 5, 6]))]
        cases.append(argv)
    cases += _hydra_group_cases()
    # Must stay last: Dora's _compare_config keeps its path in a mutable default
    # argument, and this failure leaves "mapping" in it, so every later XP of
    # the same process would get a wrong delta ("mapping.seed" for "seed").
    cases.append(["mapping=null"])
    return cases


# -- Launcher value conversion -----------------------------------------------

def value_to_argv_cases():
    """(style, value) pairs given to ``main.value_to_argv`` (what a grid's launcher does).

    Styles: ``argparse`` (use_underscore=True), ``argparse_dash``
    (use_underscore=False), ``hydra``.
    """
    argparse_values = [
        "--lr=0.1", "--name=hello world", "", [],
        {"lr": 0.1}, {"lr": 0.10}, {"lr": 1e-3}, {"lr": 1e-5}, {"lr": 3.0}, {"lr": -0.5},
        {"epochs": 5, "batch_size": 64}, {"amp": True}, {"amp": False}, {"note": None},
        {"name": "hello world"}, {"name": "héllo"}, {"name": "a=b"}, {"name": ""},
        {"tags": ["a", "b"]}, {"layers": (1, 2)}, {"opt": {"lr": 0.1}},
        {"data": PurePosixPath("/tmp/x")}, {"debug_level": 1}, {"num_workers": 0},
        [{"lr": 0.1}, "--amp", [{"epochs": 3}, ("--x", {"y": True})]],
        ({"x": 1},), {"batch_size": 1, "log_dir": "a_b"}, {1: 2},
        3, None, 1.5, {"a"},
    ]
    hydra_values = [
        "model=big", "", [], {"model": "big"}, {"data/aug": "strong"}, {"optim": "adam"},
        {"optim.lr": 0.1}, {"optim.lr": 1e-3}, {"epochs": 10}, {"name": "hello world"},
        {"name": "héllo"}, {"name": "a=b"}, {"name": "it's \"q\""}, {"note": None},
        {"amp": True}, {"amp": False}, {"tags": ["a", 1, None, True, 2.5]},
        {"mapping": {"alpha": 1, "beta": {"gamma": [1, 2]}}}, {"+new.key": 3},
        {"mapping": {1: "a", None: 2, False: 3, 1.5: 4}}, {"x": (1, 2)}, {"x": ()},
        {"+model": "big"}, {"model.hidden": 3},
        ["a=1", {"b": 2}, [{"model": "small"}, ("c=3",)]],
        {"bad": {"a:b": 1}}, {"bad": {(1, 2): 3}}, {"bad": {1, 2}},
        {"bad": PurePosixPath("/x")}, 3, None,
    ]
    cases = [("argparse", value) for value in argparse_values]
    cases += [("argparse_dash", value) for value in argparse_values]
    cases += [("hydra", value) for value in hydra_values]
    return cases
