"""Face-verification style metric learning on cnnfast: triplet mining and loss
(``mining``), threshold selection, ROC and AUC (``verify``), and the ``cnnfast verify``
demo (``demo``): a Siamese embedding trained on some digit classes and verified one-shot
on classes it never saw."""
from .mining import (MINING, batch_hard_triplets, batch_triplet_loss, mine_triplets,  # noqa: F401
                     pairwise_distances, semi_hard_triplets)
from .verify import auc, best_threshold, make_pairs, pair_distances, roc_curve, verification_accuracy  # noqa: F401
