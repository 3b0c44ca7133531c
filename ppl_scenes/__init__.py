"""ppl_scenes: generative, object-centric scene models in Pyro."""

__version__ = "0.1.0"
