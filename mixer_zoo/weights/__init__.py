"""Layer 2: the weights as data: the manifest, downloads, the Hugging Face cache and model cards."""
