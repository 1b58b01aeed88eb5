// Package switchboardv1 is the vocabulary the actors speak: the messages
// between connection actors, channel and session grains, relays and
// replicas, one .proto file per actor that receives them. The .pb.go files
// are generated from the .proto files beside them with
// `go tool buf generate`: edit the .proto files, then regenerate.
package switchboardv1
