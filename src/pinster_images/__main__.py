import sys

from pinster_images.cli import main

sys.exit(main())
