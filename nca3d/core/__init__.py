"""The core: the NCA (nca), its decoder (lppn), the model that joins them (model), growing a state
(grow), decoding it on a dense grid (dense), a model to and from a file's header and tensors
(serial), and CPU inference on Python threads (threads). It imports only the lattices and nca3d's
base modules (errors, progress)."""
