"""The physics of the synthetic detector images, one concept a module; pipeline.simulate draws
images and datasets from it."""
