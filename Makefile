.PHONY: demo test
demo:
	bash scripts/cellama.sh demo
test:
	bash scripts/cellama.sh test
