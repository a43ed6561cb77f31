// A grpc-go client with its default dial options, as a Go user's tooling
// would be: no faultd stubs. Asks the server's health (grpc.health.v1) and
// calls one method with an empty request, passing the bytes through.
//
//	go_probe TARGET METHOD
//
// TARGET is "unix:///path/faultd.sock". Prints one JSON object:
// {"health": "SERVING", "call": {"code": "OK", "bytes": N}}; exits 1 when
// the connection or the health check fails.
//
// Built by the tests with Debian's Go and golang-google-grpc-dev in GOPATH
// mode (no module proxy needed).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// raw passes messages through as bytes: the probe needs no generated code
// for the method it calls. It keeps the name "proto" so the content type
// is the one every gRPC server expects.
type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "proto" }

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go_probe TARGET METHOD")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, os.Args[1], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		os.Exit(1)
	}
	req, reply := []byte{}, []byte{}
	call := map[string]interface{}{"code": "OK"}
	if err := conn.Invoke(ctx, os.Args[2], &req, &reply, grpc.ForceCodec(raw{})); err != nil {
		call["code"] = status.Code(err).String()
		call["details"] = status.Convert(err).Message()
	}
	call["bytes"] = len(reply)
	out, _ := json.Marshal(map[string]interface{}{"health": health.Status.String(), "call": call})
	fmt.Println(string(out))
}
