module tidemark/bench/sseclient

go 1.26
