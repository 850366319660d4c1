"""Project scripts: the demo walkthrough, its video and the one-page summary."""
