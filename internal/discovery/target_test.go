package discovery_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/gatherproxy/gather/internal/discovery"
)

func TestParseTarget(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want discovery.Target
	}{
		{"etcd://127.0.0.1:2379/gather", discovery.Target{Endpoints: []string{"127.0.0.1:2379"}, Prefix: "/gather"}},
		{"etcd://a:1,b.example:2,[::1]:3/gather/prod/", discovery.Target{Endpoints: []string{"a:1", "b.example:2", "[::1]:3"}, Prefix: "/gather/prod"}},
		{"ETCD://h:2379/p", discovery.Target{Endpoints: []string{"h:2379"}, Prefix: "/p"}},
	}
	for _, tc := range good {
		got, err := discovery.ParseTarget(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	bad := []struct{ in, wantErr string }{
		{"127.0.0.1:2379/gather", "no scheme"},
		{"http://127.0.0.1:2379/gather", `scheme "http" is not "etcd"`},
		{"etcds://127.0.0.1:2379/gather", "TLS to etcd is not supported yet"},
		{"etcd:///gather", "no etcd endpoint"},
		{"etcd://127.0.0.1/gather", "is not HOST:PORT"},
		{"etcd://127.0.0.1:0/gather", "not a number from 1 to 65535"},
		{"etcd://:2379/gather", "has no host"},
		{"etcd://a:1,,b:2/gather", "is not HOST:PORT"},
		{"etcd://127.0.0.1:2379", "no key prefix"},
		{"etcd://127.0.0.1:2379/", "no key prefix"},
		{"etcd://127.0.0.1:2379/a//b", "empty, '.' or '..' segment"},
		{"etcd://127.0.0.1:2379/a/../b", "empty, '.' or '..' segment"},
		{"etcd://127.0.0.1:2379/a b", "space or a control character"},
		{"etcd://127.0.0.1:2379/a?x=1", "query strings"},
	}
	for _, tc := range bad {
		_, err := discovery.ParseTarget(tc.in)
		if err == nil || !errors.Is(err, discovery.ErrTarget) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseTarget(%q) = %v; want an ErrTarget that says %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestTargetStringRoundTrips(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"etcd://127.0.0.1:2379/gather", "etcd://a:1,[::1]:2/x/y"} {
		tg, err := discovery.ParseTarget(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := tg.String(); got != s {
			t.Errorf("String() = %q, want %q", got, s)
		}
	}
}

func TestCheckAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr, wantErr string
	}{
		{"127.0.0.1:7071", ""},
		{"[::1]:7071", ""},
		{"shard-0.search.internal:7071", ""},
		{"0.0.0.0:7071", "wildcard"},
		{"[::]:7071", "wildcard"},
		{":7071", "wildcard"},
		{"127.0.0.1:0", "not a number from 1"},
		{"127.0.0.1", "is not HOST:PORT"},
		{"bad host:1", "neither an IP address nor a host name"},
	} {
		err := discovery.CheckAddress(tc.addr)
		if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("CheckAddress(%q) = %v; want an error saying %q", tc.addr, err, tc.wantErr)
		}
	}
}

func ExampleParseTarget() {
	t, err := discovery.ParseTarget("etcd://10.0.0.1:2379,10.0.0.2:2379/gather/prod")
	if err != nil {
		panic(err)
	}
	fmt.Println(t.Endpoints, t.Prefix)
	r := discovery.Registration{Shard: "shard-1", Partition: "1/4", ReplicaID: "r0", Address: "10.0.1.7:7071"}
	fmt.Println(r.Key(t.Prefix))
	_, err = discovery.ParseTarget("etcd://10.0.0.1:2379")
	fmt.Println(err)
	// Output:
	// [10.0.0.1:2379 10.0.0.2:2379] /gather/prod
	// /gather/prod/shard-1/r0
	// invalid registry URL "etcd://10.0.0.1:2379": no key prefix: give one, so that gather's keys stay apart from the rest of etcd; want etcd://HOST:PORT[,HOST:PORT...]/PREFIX, e.g. etcd://127.0.0.1:2379/gather/prod
}

func TestAdvertised(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		listen, advertise, want, wantErr string
	}{
		{"127.0.0.1:7071", "", "127.0.0.1:7071", ""},
		{"0.0.0.0:7071", "10.0.0.5:7071", "10.0.0.5:7071", ""},
		{"0.0.0.0:7071", "", "", "--listen 0.0.0.0:7071 is a wildcard address, which a proxy cannot dial: give --advertise"},
		{"[::]:7071", "", "", "wildcard"},
		{":7071", "", "", "wildcard"},
		{"127.0.0.1:7071", "0.0.0.0:7071", "", "--advertise: \"0.0.0.0:7071\": 0.0.0.0 is a wildcard"},
	} {
		got, err := discovery.Advertised(tc.listen, tc.advertise)
		if got != tc.want || (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Advertised(%q, %q) = %q, %v; want %q and an error saying %q", tc.listen, tc.advertise, got, err, tc.want, tc.wantErr)
		}
	}
}
