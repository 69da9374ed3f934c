package shard

import (
	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/analysis/analyzer/keyword"
	"github.com/blevesearch/bleve/v2/analysis/lang/en"
	"github.com/blevesearch/bleve/v2/mapping"
	index "github.com/blevesearch/bleve_index_api"
)

// The fields of an indexed passage.
const (
	// textField holds the passage text: analysed with the English analyzer,
	// searched, and stored to be returned with hits.
	textField = "text"
	// fieldsField holds the passage's other fields as one JSON object of
	// strings, stored but not indexed. One stored field rather than one per
	// corpus field keeps the mapping static whatever the corpus holds.
	fieldsField = "fields"
)

// mappingVersion identifies newMapping and the document layout. Bump it on
// any change to either, so that existing indexes are rebuilt rather than
// searched with assumptions they do not meet.
const mappingVersion = 1

// scoringModel is the relevance model the index is built with. bleve has
// scored BM25 (k1 = 1.2, b = 0.75) since v2.5 when the mapping asks for it.
const scoringModel = index.BM25Scoring

// newMapping returns the index mapping: a static document with the two
// fields above and nothing else. There is no "_all" composite field, no term
// vectors and no doc values, which halves build time and index size; search
// therefore names the text field explicitly and cannot highlight.
func newMapping() *mapping.IndexMappingImpl {
	text := bleve.NewTextFieldMapping()
	text.Analyzer = en.AnalyzerName
	text.Store = true
	text.Index = true
	text.IncludeTermVectors = false
	text.IncludeInAll = false
	text.DocValues = false

	fields := bleve.NewTextFieldMapping()
	fields.Analyzer = keyword.Name // never used for search; the cheapest analysis
	fields.Store = true
	fields.Index = false
	fields.IncludeTermVectors = false
	fields.IncludeInAll = false
	fields.DocValues = false

	doc := bleve.NewDocumentStaticMapping()
	doc.AddFieldMappingsAt(textField, text)
	doc.AddFieldMappingsAt(fieldsField, fields)
	doc.AddSubDocumentMapping("_all", bleve.NewDocumentDisabledMapping())

	m := bleve.NewIndexMapping()
	m.DefaultMapping = doc
	m.DefaultAnalyzer = en.AnalyzerName
	m.DefaultField = textField
	m.IndexDynamic = false
	m.StoreDynamic = false
	m.DocValuesDynamic = false
	m.ScoringModel = scoringModel
	return m
}
