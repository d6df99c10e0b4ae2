"""Neural style transfer (CS-230): Gram-matrix style cost, content cost, and the optimisation loop."""
