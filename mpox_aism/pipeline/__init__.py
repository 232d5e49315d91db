"""Camera pipeline: source → regions → crops → track → classify → decide. Built by the pipeline issue."""
