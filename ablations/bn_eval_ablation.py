"""bn_eval_ablation: does how BN is evaluated explain the gap?

Evaluation-only: every variant reuses one training per (depth, seed), so the comparison
is exactly paired. Caffe's BN (the authors' notes) averaged statistics over a large
training batch after training; PyTorch uses moving averages; some code evaluates in
training mode (batch statistics).
"""

from ablations import Study, register

STUDY = register(
    Study(
        name="bn_eval_ablation",
        question="Does the BN evaluation mode change test error?",
        hypothesis="Moving averages (PyTorch) and population statistics (the authors' "
        "Caffe practice) agree; batch statistics at test time raise error.",
        source="The public reproduction's author suspected the BN implementation; the "
        "authors' ImageNet notes say BN statistics were recomputed after training.",
        variants={
            "running": {"bn_eval": "running"},  # PyTorch moving averages
            "precise": {"bn_eval": "precise"},  # population statistics after training
            "batch": {"bn_eval": "batch"},  # each test batch's own statistics
            # batch statistics on shuffled test batches (stored order is not class-sorted
            # in CIFAR, but other loaders may be)
            "batch_shuffled": {"bn_eval": "batch", "eval_shuffle": True},
        },
        baseline="running",
    )
)
