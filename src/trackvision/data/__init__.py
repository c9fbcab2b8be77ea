"""Datasets: sources, image decoding, balancing and splitting, augmentation, packed splits."""
