using MeLlama.Evaluation.Metrics;

namespace MeLlama.Evaluation.Tests.Metrics;

public class SetF1Tests
{
    [Fact]
    public void Entity_F1_requires_exact_span_and_type_and_is_micro_averaged()
    {
        IReadOnlySet<EntityMention>[] gold =
        [
            new HashSet<EntityMention> { new("aspirin", "DRUG"), new("headache", "PROBLEM") },
            new HashSet<EntityMention> { new("ct scan", "TEST") },
        ];
        IReadOnlySet<EntityMention>[] pred =
        [
            new HashSet<EntityMention> { new("aspirin", "DRUG"), new("headache", "TEST") },   // type wrong on the second
            new HashSet<EntityMention> { new("ct scan", "TEST"), new("fever", "PROBLEM") },   // spurious second
        ];
        var prf = SetF1.Micro(gold, pred);
        // tp 2, predicted 4, gold 3 -> P 1/2, R 2/3, F1 = 2*(1/3)/(7/6) = 4/7
        Assert.Equal(0.5, prf.Precision, 12);
        Assert.Equal(2.0 / 3, prf.Recall, 12);
        Assert.Equal(4.0 / 7, prf.F1, 12);
    }

    [Fact]
    public void Entity_matches_do_not_cross_items()
    {
        IReadOnlySet<EntityMention>[] gold = [new HashSet<EntityMention> { new("aspirin", "DRUG") }, new HashSet<EntityMention>()];
        IReadOnlySet<EntityMention>[] pred = [new HashSet<EntityMention>(), new HashSet<EntityMention> { new("aspirin", "DRUG") }];
        Assert.Equal(0, SetF1.Micro(gold, pred).F1);
    }

    [Fact]
    public void Relation_F1_respects_direction_and_type()
    {
        IReadOnlySet<RelationMention>[] gold = [new HashSet<RelationMention> { new("warfarin", "aspirin", "effect"), new("a", "b", "mechanism") }];
        IReadOnlySet<RelationMention>[] pred = [new HashSet<RelationMention> { new("aspirin", "warfarin", "effect"), new("a", "b", "mechanism"), new("a", "c", "advise") }];
        var prf = SetF1.Micro(gold, pred);
        // Only (a, b, mechanism) matches: tp 1, predicted 3, gold 2 -> P 1/3, R 1/2, F1 2/5
        Assert.Equal(1.0 / 3, prf.Precision, 12);
        Assert.Equal(0.5, prf.Recall, 12);
        Assert.Equal(0.4, prf.F1, 12);
    }

    [Fact]
    public void Macro_over_types_averages_per_type_F1()
    {
        IReadOnlySet<EntityMention>[] gold = [new HashSet<EntityMention> { new("x", "A"), new("y", "B") }];
        IReadOnlySet<EntityMention>[] pred = [new HashSet<EntityMention> { new("x", "A") }];
        // A: F1 1, B: F1 0 -> 0.5
        Assert.Equal(0.5, SetF1.MacroOverTypes(gold, pred), 12);
    }

    [Fact]
    public void Token_F1_and_exact_match_follow_squad_normalisation()
    {
        // gold "left ventricle" (article dropped), pred 3 tokens, overlap 2 -> P 2/3, R 1, F1 0.8
        Assert.Equal(0.8, TokenF1.F1("The left ventricle.", "left ventricle hypertrophy"), 12);
        Assert.True(TokenF1.ExactMatch("The Left Ventricle.", "left  ventricle"));
        Assert.False(TokenF1.ExactMatch("left ventricle", "right ventricle"));
    }
}
