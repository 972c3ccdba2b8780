"""The two-stage chain (stylize with the GAN, then edit with InstructPix2Pix), shared by infer.py and the web app."""
