package corpus_test

import (
	"fmt"
	"log"
	"strings"

	"github.com/gatherproxy/gather/internal/corpus"
)

func ExampleParsePartition() {
	p, err := corpus.ParsePartition("1/4")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Index, p.Count, p)

	_, err = corpus.ParsePartition("4/4")
	fmt.Println(err)
	// Output:
	// 1 4 1/4
	// invalid partition 4/4: the index is 0-based and must be in [0, 3]
}

func ExamplePassages() {
	in := `{"id": "1790_george_washington_n", "year": 1790, "text": "Fellow-Citizens of the Senate and House of Representatives: I embrace with great satisfaction the opportunity which now presents itself."}`
	err := corpus.Passages(strings.NewReader(in), corpus.Partition{Index: 0, Count: 1}, func(p corpus.Passage) error {
		fmt.Println(p.ID, p.Fields)
		fmt.Println(p.Text)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// 1790_george_washington_n#001 map[passage:1 source_id:1790_george_washington_n year:1790]
	// Fellow-Citizens of the Senate and House of Representatives: I embrace with great satisfaction the opportunity which now presents itself.
}
