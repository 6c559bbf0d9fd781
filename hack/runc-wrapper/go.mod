module modeleval.local/hack/runc-wrapper

go 1.25
