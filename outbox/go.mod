module github.com/kavari-go/kavari/outbox

go 1.26.0

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/segmentio/kafka-go v0.4.51 // indirect
	github.com/stretchr/testify v1.11.1 // indirect
)

require github.com/kavari-go/kavari v0.0.0-00010101000000-000000000000
