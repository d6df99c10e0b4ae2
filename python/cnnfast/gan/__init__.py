"""A small DCGAN on cnnfast: ``Generator``/``Discriminator`` (``dcgan``) and the
``cnnfast gan`` demo (``demo``) that trains them on the digits and scores the samples
with a cnnfast digits classifier."""
from .dcgan import Discriminator, Generator, dcgan_init_  # noqa: F401
