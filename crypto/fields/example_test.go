package fields_test

import (
	"fmt"

	"github.com/strait-proxy/strait/crypto/fields"
)

func ExampleNewJSON() {
	w, err := fields.NewJSON([]string{"$.ssn_id", "$.account"})
	if err != nil {
		panic(err)
	}
	record := []byte(`{"name":"Joe Example","ssn_id":"123-45-6789","account":678900000234}`)
	// A toy "cipher" for the example; Strait passes the envelope engine here.
	sealed, _ := w.Seal(nil, record, func(path string, pt []byte) ([]byte, error) {
		return append([]byte(path+":"), pt...), nil
	})
	fmt.Println(string(sealed))
	opened, _ := w.Open(nil, sealed, func(path string, ct []byte) ([]byte, error) {
		return ct[len(path)+1:], nil
	})
	fmt.Println(string(opened) == string(record))
	// Output:
	// {"name":"Joe Example","ssn_id":"JC5zc25faWQ6IjEyMy00NS02Nzg5Ig==","account":"JC5hY2NvdW50OjY3ODkwMDAwMDIzNA=="}
	// true
}
