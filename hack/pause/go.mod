module modeleval.local/pause

go 1.19
