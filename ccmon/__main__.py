"""``python -m ccmon``."""

from ccmon.cli import main

if __name__ == "__main__":  # a spawned helper process imports this module again (ccmon/scrape_pool.py)
    main()
