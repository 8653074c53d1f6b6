from pinster_images.cli import run

run()
