"""ghost_bn_ablation: BN statistics over the batch of 128 or per half, as on two GPUs."""

from ablations import Study, register

STUDY = register(
    Study(
        name="ghost_bn_ablation",
        question="Do per-GPU BN statistics (two halves of 64) change test error?",
        hypothesis="The paper trained on two GPUs; per-GPU BN adds noise that regularises "
        "and lowers error slightly.",
        source="He et al. 2015 sec. 4.2: mini-batch 128 on two GPUs; per-GPU BN is not stated.",
        variants={
            "split1": {"bn_split": 1},  # one BN batch of 128
            "split2": {"bn_split": 2},  # two BN batches of 64
        },
        baseline="split1",
    )
)
