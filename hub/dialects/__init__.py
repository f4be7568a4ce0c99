"""Client wire formats other than OpenAI's, read into and rendered from the OpenAI shape."""
