"""Bulk jobs: index a directory or S3 prefix, or scan a crawl, through Spark (spark/)."""
