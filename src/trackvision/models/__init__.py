"""Models: the project's own CNN and ViT, and any timm model, behind one factory."""
