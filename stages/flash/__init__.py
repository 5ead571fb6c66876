"""`invoke flash`: the image to write, the card to write it to, writing and reading back."""
