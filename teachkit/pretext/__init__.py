"""Chapter 1's representation learners: an autoencoder (unsupervised) and a two-view
contrastive model (self-supervised), the baselines DINO is compared with."""
