"""Defaults the command line shows in its help, kept where reading them loads nothing else: the
command's start-up imports this, not the modules that use them."""

# The candidate `smalldata curve` draws by default: logistic regression on frozen embeddings.
DEFAULT_HEAD = "logistic-regression"
