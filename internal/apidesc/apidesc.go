// Package apidesc serves gather's API descriptors with their comments over gRPC reflection.
//
// protoc-gen-go strips comments from the descriptors it compiles into gen/, so reflection from
// the generated code alone leaves `grpcurl describe` silent. gather.binpb is the buf image of
// proto/ (made by `make generate`, checked by `make checkgenerate`), which keeps the source
// info; Resolver answers from it first and from the compiled-in registry for everything else
// (health, reflection, channelz, well-known types).
package apidesc

import (
	_ "embed"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

//go:embed gather.binpb
var image []byte

var (
	once  sync.Once
	files *protoregistry.Files
	err   error
)

// Files returns the API's file descriptors, with comments.
func Files() (*protoregistry.Files, error) {
	once.Do(func() {
		var fds descriptorpb.FileDescriptorSet
		if err = proto.Unmarshal(image, &fds); err != nil {
			err = fmt.Errorf("apidesc: %w", err)
			return
		}
		files, err = protodesc.NewFiles(&fds)
		if err != nil {
			err = fmt.Errorf("apidesc: %w", err)
		}
	})
	return files, err
}

// resolver looks in the API's own files first, then in the global registry.
type resolver struct{ own *protoregistry.Files }

func (r resolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.own.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r resolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.own.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// RegisterReflection registers the v1 and v1alpha reflection services on srv, answering with
// the commented descriptors. It falls back to plain reflection if the image cannot be read.
func RegisterReflection(srv *grpc.Server) {
	own, ferr := Files()
	if ferr != nil {
		reflection.Register(srv)
		return
	}
	opts := reflection.ServerOptions{Services: srv, DescriptorResolver: resolver{own}}
	reflectionv1.RegisterServerReflectionServer(srv, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(srv, reflection.NewServer(opts)) //nolint:staticcheck // older clients (and grpcurl's fallback) still ask v1alpha
}
