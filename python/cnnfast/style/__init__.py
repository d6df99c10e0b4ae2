"""``cnnfast.style``: neural style transfer with the CS-230 sheet's costs.

``gram_matrix``, ``content_cost``, ``layer_style_cost``, ``style_cost``, ``total_cost``
(and the optional ``total_variation`` prior) are differentiable on cnnfast Tensors;
``FeatureNet`` is the random-weight VGG-like feature extractor; ``transfer.run`` is the
optimisation loop behind ``cnnfast style`` (``cli.main``).
"""
from .cost import content_cost, gram_matrix, layer_style_cost, style_cost, total_cost, total_variation  # noqa: F401
from .features import FeatureNet, layer_names  # noqa: F401
from .transfer import StyleConfig, load_image, run, save_image  # noqa: F401
