import sys

from fcnseg.cli import main

sys.exit(main())
