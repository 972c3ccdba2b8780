"""Stage 1: a conditional GAN stylizer (AnimeGAN-style unpaired photo->anime, pix2pix-style paired)."""
