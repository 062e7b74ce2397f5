"""The shared recurrent encoder and the LightningModules built on it."""
