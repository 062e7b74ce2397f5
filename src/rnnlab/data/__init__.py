"""DataModules and the pieces they share: finding files, tokenising, caching, batching."""
